#include "check.h"
#include "error.h"
#include "json.h"

using hci::parse_json;

TEST(parses_nested_values) {
  const hci::Json j = parse_json(R"({"a": [1, 2.5e3, -3], "b": {"c": "x\"y\u00e9"}, "t": true, "n": null})", "t");
  CHECK(j.is_object());
  CHECK(j.find("a")->array.size() == 3);
  CHECK_NEAR(j.find("a")->array[1].number, 2500.0, 0);
  CHECK_NEAR(j.find("a")->array[2].number, -3.0, 0);
  CHECK(j.find("b")->find("c")->string == "x\"y\xc3\xa9");
  CHECK(j.find("t")->boolean);
  CHECK(j.find("n")->is_null());
  CHECK(j.find("missing") == nullptr);
}

TEST(large_integers_are_exact) {
  const hci::Json j = parse_json("[9007199254740991]", "t");
  CHECK(j.array[0].number == 9007199254740991.0);
}

TEST(malformed_input_names_source_and_offset) {
  CHECK_THROWS(parse_json("{\"a\": [1, 2}", "cfg.json"), HCI_ERR_FORMAT, "cfg.json: invalid JSON at byte 11");
  CHECK_THROWS(parse_json("{\"a\": 1} x", "f"), HCI_ERR_FORMAT, "trailing");
  CHECK_THROWS(parse_json("\"abc", "f"), HCI_ERR_FORMAT, "unterminated string");
  CHECK_THROWS(parse_json("", "f"), HCI_ERR_FORMAT, "unexpected end");
}

TEST_MAIN()
