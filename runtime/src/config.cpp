#include "config.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "error.h"
#include "json.h"

namespace hci {

namespace {

struct Reader {
  const Json& j;
  const std::string& path;

  const Json* opt(const char* key) const {
    const Json* v = j.find(key);
    return (v && !v->is_null()) ? v : nullptr;
  }
  int get_int(const char* key, int fallback, bool required) const {
    const Json* v = opt(key);
    if (!v) {
      if (required) fail(HCI_ERR_FORMAT, path + ": missing key '" + key + "'");
      return fallback;
    }
    if (!v->is_number() || v->number != std::floor(v->number) || v->number < 1 || v->number > 1e9)
      fail(HCI_ERR_FORMAT, path + ": '" + key + "' must be a positive integer");
    return int(v->number);
  }
  double get_double(const Json* v, const char* key, double fallback) const {
    if (!v) return fallback;
    if (!v->is_number() || !(v->number > 0))
      fail(HCI_ERR_FORMAT, path + ": '" + key + "' must be a positive number");
    return v->number;
  }
  bool get_bool(const char* key, bool fallback) const {
    const Json* v = opt(key);
    if (!v) return fallback;
    if (v->type != Json::Type::Bool) fail(HCI_ERR_FORMAT, path + ": '" + key + "' must be true or false");
    return v->boolean;
  }
};

}  // namespace

ModelConfig load_config(const std::string& dir) {
  const std::string path = dir + "/config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(HCI_ERR_IO, path + ": cannot read model config: " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  const Json j = parse_json(ss.str(), path);
  if (!j.is_object()) fail(HCI_ERR_FORMAT, path + ": not a JSON object");
  Reader r{j, path};

  ModelConfig c;
  const Json* mt = r.opt("model_type");
  if (!mt || !mt->is_string()) fail(HCI_ERR_FORMAT, path + ": missing string key 'model_type'");
  c.model_type = mt->string;
  if (c.model_type != "llama" && c.model_type != "mistral")
    fail(HCI_ERR_UNSUPPORTED, path + ": model_type '" + c.model_type +
                                  "' is not supported (supported: llama, mistral)");
  c.n_layers = r.get_int("num_hidden_layers", 0, true);
  c.d_model = r.get_int("hidden_size", 0, true);
  c.n_heads = r.get_int("num_attention_heads", 0, true);
  c.n_kv_heads = r.get_int("num_key_value_heads", c.n_heads, false);
  c.d_ff = r.get_int("intermediate_size", 0, true);
  c.vocab_size = r.get_int("vocab_size", 0, true);
  c.max_positions = r.get_int("max_position_embeddings", 4096, false);
  if (c.d_model % c.n_heads != 0 && !r.opt("head_dim"))
    fail(HCI_ERR_FORMAT, path + ": hidden_size is not a multiple of num_attention_heads");
  c.head_dim = r.get_int("head_dim", c.d_model / c.n_heads, false);
  if (c.head_dim % 2 != 0) fail(HCI_ERR_FORMAT, path + ": head_dim must be even for RoPE");
  if (c.n_heads % c.n_kv_heads != 0)
    fail(HCI_ERR_FORMAT, path + ": num_attention_heads must be a multiple of num_key_value_heads");
  c.tied_embeddings = r.get_bool("tie_word_embeddings", false);
  c.rms_norm_eps = r.get_double(r.opt("rms_norm_eps"), "rms_norm_eps", 1e-6);

  // RoPE: transformers 5 nests it in rope_parameters, older versions use rope_theta/rope_scaling.
  const Json* rp = r.opt("rope_parameters");
  const Json* scaling = r.opt("rope_scaling");
  const Json* theta = r.opt("rope_theta");
  if (rp && rp->is_object()) {
    if (const Json* t = rp->find("rope_theta")) theta = t;
    scaling = rp;
  }
  c.rope_theta = r.get_double(theta, "rope_theta", 10000.0);
  if (scaling && scaling->is_object()) {
    const Json* type = scaling->find("rope_type");
    if (!type) type = scaling->find("type");
    if (type && type->is_string() && type->string != "default")
      fail(HCI_ERR_UNSUPPORTED, path + ": rope scaling type '" + type->string +
                                    "' is not supported (only 'default')");
  }
  if (r.get_bool("attention_bias", false) || r.get_bool("mlp_bias", false))
    fail(HCI_ERR_UNSUPPORTED, path + ": attention_bias / mlp_bias are not supported");
  if (const Json* act = r.opt("hidden_act"))
    if (!act->is_string() || act->string != "silu")
      fail(HCI_ERR_UNSUPPORTED, path + ": hidden_act must be 'silu'");
  return c;
}

}  // namespace hci
