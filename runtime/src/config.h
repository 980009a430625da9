// config.json of a Hugging Face LLaMA-style dense model.
#pragma once

#include <string>

namespace hci {

struct ModelConfig {
  std::string model_type;  // "llama" or "mistral"
  int n_layers = 0;        // num_hidden_layers
  int d_model = 0;         // hidden_size
  int n_heads = 0;         // num_attention_heads
  int n_kv_heads = 0;      // num_key_value_heads (defaults to n_heads)
  int head_dim = 0;        // head_dim (defaults to d_model / n_heads)
  int d_ff = 0;            // intermediate_size
  int vocab_size = 0;
  int max_positions = 0;   // max_position_embeddings
  bool tied_embeddings = false;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
};

// Reads and validates dir/config.json. Unknown model_type, unsupported features (biases, rope
// scaling other than the default, non-SiLU activations) and inconsistent sizes are errors that
// name the file and the key.
ModelConfig load_config(const std::string& dir);

}  // namespace hci
