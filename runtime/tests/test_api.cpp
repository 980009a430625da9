// The C ABI: statuses and messages at the boundary, never an exception across it.
#include <cstring>
#include <string>
#include <vector>

#include "check.h"
#include "hcinfer.h"

static bool contains(const char* s, const char* needle) { return std::strstr(s, needle) != nullptr; }

TEST(load_errors_name_the_directory) {
  char err[512];
  hci_model* m = reinterpret_cast<hci_model*>(0x1);
  CHECK(hci_model_load("/no/such/dir", nullptr, &m, err, sizeof err) == HCI_ERR_IO);
  CHECK(m == nullptr);
  CHECK(contains(err, "/no/such/dir"));
  CHECK(hci_model_load(nullptr, nullptr, &m, err, sizeof err) == HCI_ERR_INVALID_ARGUMENT);
  // a tiny buffer truncates but stays NUL-terminated
  char small[8];
  CHECK(hci_model_load("/no/such/dir", nullptr, &m, small, sizeof small) == HCI_ERR_IO);
  CHECK(std::strlen(small) == 7);
  CHECK(hci_model_load("/no/such/dir", nullptr, &m, nullptr, 0) == HCI_ERR_IO);
}

TEST(quantize_rank_and_eval_argument_errors) {
  char err[512];
  hci_model* m = nullptr;
  CHECK(hci_model_load(HCI_TINY_MODEL, nullptr, &m, err, sizeof err) == HCI_OK);
  hci_model_info info;
  CHECK(hci_model_get_info(m, &info, err, sizeof err) == HCI_OK);
  CHECK(info.n_linears == 14 && info.n_params == 622912);

  hci_quant_params qp = hci_quant_default_params();
  qp.bits = 5;
  CHECK(hci_model_quantize(m, &qp, nullptr, nullptr, err, sizeof err) == HCI_ERR_INVALID_ARGUMENT);
  CHECK(contains(err, "bits must be"));
  qp.bits = 4;
  qp.group_size = 128;  // d_in 64 is not a multiple of 128
  CHECK(hci_model_quantize(m, &qp, nullptr, nullptr, err, sizeof err) == HCI_ERR_INVALID_ARGUMENT);
  CHECK(contains(err, "layers.0.self_attn.q_proj: group size 128 does not divide d_in 64"));

  qp.group_size = 32;
  qp.max_rank = 8;
  int64_t progress = 0;
  CHECK(hci_model_quantize(m, &qp, &progress, nullptr, err, sizeof err) == HCI_OK);
  CHECK(progress == 14);
  hci_linear_info li;
  CHECK(hci_model_get_linear(m, 6, &li, err, sizeof err) == HCI_OK);
  CHECK(li.bits == 4 && li.max_rank == 8 && li.rank == 8 && li.d_out == 64 && li.d_in == 192);
  CHECK(li.rel_err_active < li.rel_err_quant && li.rel_err_quant > 0);
  double sv[16];
  int32_t nsv = 0;
  CHECK(hci_model_get_singular_values(m, 6, sv, 16, &nsv, err, sizeof err) == HCI_OK);
  CHECK(nsv == 8 && sv[0] >= sv[7]);

  int32_t ranks[14];
  for (int i = 0; i < 14; ++i) ranks[i] = 2;
  ranks[3] = 9;
  CHECK(hci_model_set_ranks(m, ranks, 14, err, sizeof err) == HCI_ERR_INVALID_ARGUMENT);
  CHECK(contains(err, "layers.0.self_attn.o_proj is outside [0, 8]"));
  CHECK(hci_model_set_ranks(m, ranks, 13, err, sizeof err) == HCI_ERR_INVALID_ARGUMENT);
  ranks[3] = 0;
  CHECK(hci_model_set_ranks(m, ranks, 14, err, sizeof err) == HCI_OK);
  CHECK(hci_model_get_linear(m, 3, &li, err, sizeof err) == HCI_OK);
  CHECK(li.rank == 0 && li.rel_err_active == li.rel_err_quant);

  const int32_t cancel = 1;
  CHECK(hci_model_quantize(m, &qp, nullptr, &cancel, err, sizeof err) == HCI_ERR_CANCELLED);
  CHECK(hci_model_get_linear(m, 6, &li, err, sizeof err) == HCI_OK);
  CHECK(li.bits == 0);  // a cancelled quantization leaves the model at full precision

  int32_t toks[100];
  for (int i = 0; i < 100; ++i) toks[i] = i;
  hci_eval_params ep = hci_eval_default_params();
  hci_eval_result er;
  ep.seq_len = 512;
  CHECK(hci_eval_nll(m, toks, 100, &ep, &er, nullptr, nullptr, err, sizeof err) == HCI_ERR_INVALID_ARGUMENT);
  CHECK(contains(err, "100 tokens do not fill one window of 512"));
  ep.seq_len = 50;
  CHECK(hci_eval_nll(m, toks, 100, &ep, &er, nullptr, nullptr, err, sizeof err) == HCI_OK);
  CHECK(er.n_windows == 2 && er.n_predicted == 98 && er.nll_sum > 0);
  toks[5] = -3;
  CHECK(hci_eval_nll(m, toks, 100, &ep, &er, nullptr, nullptr, err, sizeof err) == HCI_ERR_INVALID_ARGUMENT);
  CHECK(contains(err, "token id -3"));
  hci_model_free(m);
}

TEST(calibrate_and_quantize_ex) {
  char err[512];
  hci_model* m = nullptr;
  CHECK(hci_model_load(HCI_TINY_MODEL, nullptr, &m, err, sizeof err) == HCI_OK);
  const hci_quant_ex_params d = hci_quant_ex_default_params();
  CHECK(d.bits == 4 && d.group_size == 128 && d.method == HCI_QUANT_RTN && d.act_order == 0 &&
        d.damp_percent == 0.01 && d.scaling == HCI_SCALING_PLAIN && d.eig_floor == 1e-6 &&
        d.kind_mask == HCI_LINEAR_ALL && d.layer_end == -1 && d.groups_from_block_start == 0);
  hci_calib_info ci;
  CHECK(hci_model_get_calibration(m, &ci, err, sizeof err) == HCI_OK && ci.calibrated == 0);
  double sq[192];
  int32_t nw = 0;
  CHECK(hci_model_get_act_second_moments(m, 0, sq, 64, &nw, err, sizeof err) == HCI_ERR_INVALID_ARGUMENT);
  CHECK(contains(err, "call hci_model_calibrate first"));

  hci_quant_ex_params qp = d;
  qp.group_size = 32;
  qp.method = HCI_QUANT_GPTQ;
  CHECK(hci_model_quantize_ex(m, &qp, nullptr, nullptr, err, sizeof err) == HCI_ERR_INVALID_ARGUMENT);
  CHECK(contains(err, "GPTQ needs calibration statistics: call hci_model_calibrate first"));
  qp.method = HCI_QUANT_RTN;
  qp.scaling = HCI_SCALING_ACT_DIAG;
  qp.max_rank = 4;
  CHECK(hci_model_quantize_ex(m, &qp, nullptr, nullptr, err, sizeof err) == HCI_ERR_INVALID_ARGUMENT);
  CHECK(contains(err, "call hci_model_calibrate first"));
  qp.max_rank = 0;  // no factors: the scaling is not used
  CHECK(hci_model_quantize_ex(m, &qp, nullptr, nullptr, err, sizeof err) == HCI_OK);
  qp.act_order = 1;
  CHECK(hci_model_quantize_ex(m, &qp, nullptr, nullptr, err, sizeof err) == HCI_ERR_INVALID_ARGUMENT);
  CHECK(contains(err, "act_order applies to GPTQ"));
  qp.act_order = 0;
  qp.scaling = 3;
  CHECK(hci_model_quantize_ex(m, &qp, nullptr, nullptr, err, sizeof err) == HCI_ERR_INVALID_ARGUMENT);

  int32_t toks[4 * 32];
  for (int i = 0; i < 4 * 32; ++i) toks[i] = 2 + (i * 7919) % 8000;
  hci_calib_params cp = hci_calib_default_params();
  CHECK(cp.seq_len == 512 && cp.n_windows == 0 && cp.full_covariance == 1 && cp.n_threads == 0);
  cp.seq_len = 32;
  cp.full_covariance = 0;
  int64_t progress = 0;
  CHECK(hci_model_calibrate(m, toks, 4 * 32, &cp, &progress, nullptr, err, sizeof err) == HCI_OK);
  CHECK(progress == 4);
  CHECK(hci_model_get_calibration(m, &ci, err, sizeof err) == HCI_OK);
  CHECK(ci.calibrated == 1 && ci.seq_len == 32 && ci.n_windows == 4 && ci.full_covariance == 0 &&
        ci.n_tokens == 128 && ci.seconds >= 0);
  CHECK(hci_model_get_act_second_moments(m, 6, sq, 192, &nw, err, sizeof err) == HCI_OK);
  CHECK(nw == 192 && sq[0] > 0);
  CHECK(hci_model_get_act_covariance(m, 6, sq, 192, &nw, err, sizeof err) == HCI_ERR_INVALID_ARGUMENT);
  CHECK(contains(err, "without full_covariance"));
  qp.scaling = HCI_SCALING_ACT_FULL;
  qp.max_rank = 4;
  CHECK(hci_model_quantize_ex(m, &qp, nullptr, nullptr, err, sizeof err) == HCI_ERR_INVALID_ARGUMENT);
  CHECK(contains(err, "full_covariance = 0"));
  // GPTQ collects its own Hessians block by block: the diagonal-only calibration is enough
  qp.method = HCI_QUANT_GPTQ;
  qp.act_order = 1;
  progress = 0;
  CHECK(hci_model_quantize_ex(m, &qp, &progress, nullptr, err, sizeof err) == HCI_OK);
  CHECK(progress == 14);

  cp.full_covariance = 1;
  CHECK(hci_model_calibrate(m, toks, 4 * 32, &cp, nullptr, nullptr, err, sizeof err) == HCI_OK);
  std::vector<double> H(64 * 64);
  CHECK(hci_model_get_act_covariance(m, 1, H.data(), 64 * 64, &nw, err, sizeof err) == HCI_OK);
  CHECK(nw == 64 * 64);
  CHECK(hci_model_get_act_second_moments(m, 1, sq, 64, &nw, err, sizeof err) == HCI_OK);
  for (int j = 0; j < 64; ++j) CHECK(sq[j] == H[size_t(j * 64 + j)]);
  for (int method : {HCI_QUANT_RTN, HCI_QUANT_GPTQ})
    for (int scaling : {HCI_SCALING_PLAIN, HCI_SCALING_ACT_DIAG, HCI_SCALING_ACT_FULL}) {
      qp.method = method;
      qp.act_order = method == HCI_QUANT_GPTQ;
      qp.scaling = scaling;
      qp.max_rank = 8;
      CHECK(hci_model_quantize_ex(m, &qp, nullptr, nullptr, err, sizeof err) == HCI_OK);
      hci_linear_info li;
      CHECK(hci_model_get_linear(m, 6, &li, err, sizeof err) == HCI_OK);
      CHECK(li.bits == 4 && li.group_size == 32 && li.max_rank == 8 && li.rank == 8);
      CHECK(li.rel_err_active < li.rel_err_quant && li.rel_err_quant > 0);
      double sv[8];
      CHECK(hci_model_get_singular_values(m, 6, sv, 8, &nw, err, sizeof err) == HCI_OK);
      CHECK(nw == 8 && sv[0] >= sv[7] && sv[7] > 0);
      // rank 0: no compensation, the quantization error itself
      CHECK(hci_model_set_uniform_rank(m, 0, err, sizeof err) == HCI_OK);
      CHECK(hci_model_get_linear(m, 6, &li, err, sizeof err) == HCI_OK);
      CHECK(li.rel_err_active == li.rel_err_quant);
    }
  const int32_t cancel = 1;
  CHECK(hci_model_quantize_ex(m, &qp, nullptr, &cancel, err, sizeof err) == HCI_ERR_CANCELLED);
  CHECK(hci_model_calibrate(m, toks, 4 * 32, &cp, nullptr, &cancel, err, sizeof err) == HCI_ERR_CANCELLED);
  CHECK(hci_model_get_calibration(m, &ci, err, sizeof err) == HCI_OK && ci.calibrated == 0);
  CHECK(hci_model_calibrate(m, toks, 4 * 32, &cp, nullptr, nullptr, err, sizeof err) == HCI_OK);
  CHECK(hci_model_clear_calibration(m, err, sizeof err) == HCI_OK);
  CHECK(hci_model_get_calibration(m, &ci, err, sizeof err) == HCI_OK && ci.calibrated == 0);
  hci_model_free(m);
}

TEST(session_generate) {
  char err[512];
  hci_model* m = nullptr;
  CHECK(hci_model_load(HCI_TINY_MODEL, nullptr, &m, err, sizeof err) == HCI_OK);
  hci_session_params sp = hci_session_default_params();
  sp.n_ctx = 4096;
  hci_session* s = nullptr;
  CHECK(hci_session_create(m, &sp, &s, err, sizeof err) == HCI_ERR_INVALID_ARGUMENT);
  sp.n_ctx = 64;
  CHECK(hci_session_create(m, &sp, &s, err, sizeof err) == HCI_OK);
  // reference.json prompt 1 and its greedy continuation (transformers)
  const int32_t prompt[] = {0, 2102, 698, 261, 568, 14, 474, 314, 261, 590, 1007, 2267};
  const int32_t expect[] = {1600, 16, 674, 1646, 283, 1083, 341, 351, 755, 16};
  int32_t out[10];
  int32_t n_out = 0;
  CHECK(hci_generate_greedy(s, prompt, 12, 10, -1, out, &n_out, err, sizeof err) == HCI_OK);
  CHECK(n_out == 10);
  for (int i = 0; i < 10; ++i) CHECK(out[i] == expect[i]);
  CHECK(hci_session_n_past(s) == 21);
  hci_session_free(s);
  hci_model_free(m);
}

TEST(status_names_and_version) {
  CHECK(std::string(hci_status_name(HCI_ERR_FORMAT)) == "HCI_ERR_FORMAT");
  CHECK(std::string(hci_status_name(99)) == "HCI_ERR_UNKNOWN");
  CHECK(hci_abi_version() == HCI_ABI_VERSION);
  CHECK(contains(hci_version(), "hcinfer"));
}

TEST_MAIN()
