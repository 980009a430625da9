import assert from "node:assert/strict";
import { check, decodeCString, HciError, Status, statusName } from "./errors.ts";

Deno.test("statusName follows the header's enum", () => {
  assert.equal(statusName(Status.Ok), "HCI_OK");
  assert.equal(statusName(Status.Format), "HCI_ERR_FORMAT");
  assert.equal(statusName(Status.Internal), "HCI_ERR_INTERNAL");
  assert.equal(statusName(42), "HCI_STATUS_42");
});

Deno.test("check: nonzero status throws HciError with the NUL-terminated message", () => {
  const err = new Uint8Array(1024).fill(0x41);
  const msg = new TextEncoder().encode("cannot open /x/config.json: ü");
  err.set(msg);
  err[msg.length] = 0;
  check(Status.Ok, err);
  assert.throws(() => check(Status.Io, err), (e) => {
    assert.ok(e instanceof HciError);
    assert.equal(e.status, 2);
    assert.equal(e.statusName, "HCI_ERR_IO");
    assert.equal(e.message, "cannot open /x/config.json: ü");
    assert.equal(e.name, "HciError");
    return true;
  });
});

Deno.test("HciError falls back to the status name; decodeCString without NUL", () => {
  assert.equal(new HciError(7, "").message, "HCI_ERR_CANCELLED");
  assert.equal(decodeCString(new TextEncoder().encode("abc")), "abc");
});
