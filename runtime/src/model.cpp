#include "model.h"

#include <cmath>

#include "error.h"
#include "safetensors.h"

namespace hci {

static const char* kLinearSuffix[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                       "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                       "mlp.down_proj"};

std::string linear_name(int index) {
  return "layers." + std::to_string(index / 7) + "." + kLinearSuffix[index % 7];
}

double Linear::active_error() const {
  if (!bits) return 0;
  if (rank == 0) return norm_e;
  if (size_t(rank) < err_prefix.size()) return err_prefix[size_t(rank)];
  double e2 = norm_e * norm_e;
  for (int i = 0; i < rank; ++i) e2 -= singular[size_t(i)] * singular[size_t(i)];
  return std::sqrt(e2 > 0 ? e2 : 0);
}

void Linear::clear_quantization() {
  bits = group_size = max_rank = rank = scaling = 0;
  codes.clear();
  scales.clear();
  zeros.clear();
  g_idx.clear();
  err_prefix.clear();
  w_deq.clear();
  A.clear();
  B.clear();
  singular.clear();
  norm_e = 0;
}

int64_t Model::n_params() const {
  int64_t n = int64_t(embed.size()) + int64_t(final_norm.size()) + int64_t(lm_head_own.size());
  for (const Block& b : blocks) {
    n += int64_t(b.attn_norm.size() + b.mlp_norm.size());
    for (const Linear& l : b.lin) n += int64_t(l.w.size());
  }
  return n;
}

static std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// Reads tensor `name` into a float32 vector after checking its shape.
static std::vector<float> read_tensor(const Checkpoint& ckpt, const std::string& name,
                                      const std::vector<int64_t>& shape) {
  const TensorView& t = ckpt.get(name);
  if (t.shape != shape)
    fail(HCI_ERR_FORMAT, t.file + ": tensor '" + name + "' has shape " + shape_str(t.shape) +
                             " but config.json implies " + shape_str(shape));
  std::vector<float> out(size_t(t.numel()));
  t.to_f32(out.data());
  return out;
}

Model load_model(const std::string& dir) {
  Model m;
  m.dir = dir;
  m.cfg = load_config(dir);
  const ModelConfig& c = m.cfg;
  Checkpoint ckpt(dir);
  m.files = ckpt.files();
  const int64_t d = c.d_model, hd = c.head_dim, q_out = int64_t(c.n_heads) * hd,
                kv_out = int64_t(c.n_kv_heads) * hd, ff = c.d_ff;
  m.embed = read_tensor(ckpt, "model.embed_tokens.weight", {c.vocab_size, d});
  m.final_norm = read_tensor(ckpt, "model.norm.weight", {d});
  if (!c.tied_embeddings) {
    m.lm_head_own = read_tensor(ckpt, "lm_head.weight", {c.vocab_size, d});
  }
  const std::vector<int64_t> shapes[7] = {{q_out, d}, {kv_out, d}, {kv_out, d}, {d, q_out},
                                          {ff, d},    {ff, d},     {d, ff}};
  m.blocks.resize(size_t(c.n_layers));
  for (int l = 0; l < c.n_layers; ++l) {
    Block& b = m.blocks[size_t(l)];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    b.attn_norm = read_tensor(ckpt, p + "input_layernorm.weight", {d});
    b.mlp_norm = read_tensor(ckpt, p + "post_attention_layernorm.weight", {d});
    for (int k = 0; k < 7; ++k) {
      Linear& lin = b.lin[size_t(k)];
      lin.d_out = int(shapes[k][0]);
      lin.d_in = int(shapes[k][1]);
      lin.w = read_tensor(ckpt, p + kLinearSuffix[k] + ".weight", shapes[k]);
      double s = 0;
      for (float v : lin.w) s += double(v) * v;
      lin.norm_w = std::sqrt(s);
    }
  }
  return m;
}

}  // namespace hci
