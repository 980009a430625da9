#include <cstring>

#include "check.h"
#include "error.h"
#include "model.h"
#include "safetensors.h"
#include "test_util.h"

using namespace testutil;

static std::string f32_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

TEST(reads_f32_f16_bf16) {
  const std::string dir = temp_dir();
  // a: F32 [2,2] = 1,2,3,4 ; b: F16 [2] = 1.5, -2 ; c: BF16 [1] = 3.0
  std::string data = f32_bytes({1, 2, 3, 4});
  const uint16_t f16[2] = {0x3E00, 0xC000};
  const uint16_t bf16[1] = {0x4040};
  data += std::string(reinterpret_cast<const char*>(f16), 4);
  data += std::string(reinterpret_cast<const char*>(bf16), 2);
  const std::string header =
      R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
      R"("b":{"dtype":"F16","shape":[2],"data_offsets":[16,20]},)"
      R"("c":{"dtype":"BF16","shape":[1],"data_offsets":[20,22]},"__metadata__":{"format":"pt"}})";
  write_file(dir + "/model.safetensors", safetensors_bytes(header, data));
  hci::Checkpoint ck(dir);
  float out[4];
  ck.get("a").to_f32(out);
  CHECK(out[0] == 1 && out[3] == 4);
  ck.get("b").to_f32(out);
  CHECK(out[0] == 1.5f && out[1] == -2.0f);
  ck.get("c").to_f32(out);
  CHECK(out[0] == 3.0f);
  CHECK(ck.find("zzz") == nullptr);
  CHECK_THROWS(ck.get("zzz"), HCI_ERR_FORMAT, "tensor 'zzz' not found");
}

TEST(f16_round_trip_and_rounding) {
  CHECK(hci::f16_to_f32(hci::f32_to_f16(0.1f)) == float(_Float16(0.1f)));
  for (float v : {1e-7f, 3.14159f, -65504.0f, 6.1e-5f, 0.33333f, 1234.567f})
    CHECK(hci::f16_to_f32(hci::f32_to_f16(v)) == float(_Float16(v)));
}

TEST(truncated_file_is_reported) {
  const std::string dir = temp_dir();
  const std::string header = R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
  std::string bytes = safetensors_bytes(header, f32_bytes({1, 2, 3, 4}));
  write_file(dir + "/model.safetensors", bytes.substr(0, bytes.size() - 5));
  CHECK_THROWS(hci::Checkpoint ck(dir), HCI_ERR_FORMAT, "model.safetensors: tensor 'a': data_offsets [0, 16] out of range");
  write_file(dir + "/model.safetensors", bytes.substr(0, 20));  // cut inside the header
  CHECK_THROWS(hci::Checkpoint ck(dir), HCI_ERR_FORMAT, "truncated safetensors file");
  write_file(dir + "/model.safetensors", bytes.substr(0, 5));
  CHECK_THROWS(hci::Checkpoint ck(dir), HCI_ERR_FORMAT, "truncated safetensors file");
}

TEST(out_of_range_and_inconsistent_offsets) {
  const std::string dir = temp_dir();
  write_file(dir + "/model.safetensors",
             safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[8,99999]}})",
                               f32_bytes({1, 2, 3, 4})));
  CHECK_THROWS(hci::Checkpoint ck(dir), HCI_ERR_FORMAT, "out of range");
  write_file(dir + "/model.safetensors",
             safetensors_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})",
                               f32_bytes({1, 2, 3, 4})));
  CHECK_THROWS(hci::Checkpoint ck(dir), HCI_ERR_FORMAT, "shape and dtype need 12");
  write_file(dir + "/model.safetensors",
             safetensors_bytes(R"({"a":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})",
                               f32_bytes({1, 2, 3, 4})));
  CHECK_THROWS(hci::Checkpoint ck(dir), HCI_ERR_UNSUPPORTED, "dtype I64 is not supported");
  write_file(dir + "/model.safetensors", safetensors_bytes("{\"a\": [", ""));
  CHECK_THROWS(hci::Checkpoint ck(dir), HCI_ERR_FORMAT, "(safetensors header): invalid JSON");
}

TEST(sharded_checkpoint_and_missing_shard) {
  const std::string dir = temp_dir();
  write_file(dir + "/s1.safetensors",
             safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", f32_bytes({7})));
  write_file(dir + "/s2.safetensors",
             safetensors_bytes(R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", f32_bytes({9})));
  write_file(dir + "/model.safetensors.index.json",
             R"({"metadata":{},"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}})");
  hci::Checkpoint ck(dir);
  float v;
  ck.get("b").to_f32(&v);
  CHECK(v == 9.0f);
  CHECK(ck.files().size() == 2);
  std::remove((dir + "/s2.safetensors").c_str());
  CHECK_THROWS(hci::Checkpoint ck2(dir), HCI_ERR_IO, "s2.safetensors: shard listed in");
}

TEST(missing_directory_is_reported) {
  CHECK_THROWS(hci::Checkpoint ck("/nonexistent/model"), HCI_ERR_IO,
               "/nonexistent/model: no model.safetensors");
}

// Copies the tiny model to a temp dir with config.json replaced.
static std::string tiny_with_config(const std::string& from, const std::string& to) {
  const std::string dir = temp_dir();
  std::string cfg = read_file(std::string(HCI_TINY_MODEL) + "/config.json");
  const size_t at = cfg.find(from);
  if (at != std::string::npos) cfg.replace(at, from.size(), to);
  write_file(dir + "/config.json", cfg);
  write_file(dir + "/model.safetensors", read_file(std::string(HCI_TINY_MODEL) + "/model.safetensors"));
  return dir;
}

TEST(unknown_model_type_and_shape_mismatch) {
  CHECK_THROWS(hci::load_model(tiny_with_config("\"llama\"", "\"gpt_neox\"")),
               HCI_ERR_UNSUPPORTED, "config.json: model_type 'gpt_neox' is not supported");
  CHECK_THROWS(hci::load_model(tiny_with_config("\"intermediate_size\": 192", "\"intermediate_size\": 128")),
               HCI_ERR_FORMAT,
               "model.safetensors: tensor 'model.layers.0.mlp.gate_proj.weight' has shape [192, 64] but config.json implies [128, 64]");
  CHECK_THROWS(hci::load_model(tiny_with_config("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3")),
               HCI_ERR_FORMAT, "tensor 'model.layers.2.input_layernorm.weight' not found");
  CHECK_THROWS(hci::load_model(tiny_with_config("\"hidden_size\": 64", "\"hidden_size\": \"x\"")),
               HCI_ERR_FORMAT, "'hidden_size' must be a positive integer");
}

TEST(loads_tiny_checkpoint) {
  hci::Model m = hci::load_model(HCI_TINY_MODEL);
  CHECK(m.cfg.n_layers == 2 && m.cfg.d_model == 64 && m.cfg.n_heads == 4 && m.cfg.n_kv_heads == 2);
  CHECK(m.cfg.head_dim == 16 && m.cfg.d_ff == 192 && m.cfg.vocab_size == 8192);
  CHECK(m.cfg.tied_embeddings);
  CHECK(m.n_params() == 622912);  // reference.json "params"
}

TEST_MAIN()
