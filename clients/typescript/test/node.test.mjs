// @ts-check
// The package from Node against the real server: gRPC (HTTP/2, connect-node) and grpc-web (fetch,
// connect-web), through the package's own export (dist/, built by `npm test`).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { CallSchema, CallStatus, errorDetails, isTerminal, toJsonValue, VoiceAgentService } from "@voice-agent/client";
import { startServer } from "./server.mjs";

/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server?.stop();
});

test("GetServerInfo and PlaceCall over gRPC, watched to COMPLETED", async () => {
  const client = createClient(VoiceAgentService, createGrpcTransport({ baseUrl: server.baseUrl }));
  const info = await client.getServerInfo({});
  assert.equal(info.telephonyEmulated, true);
  assert.ok(info.backends.length > 0);

  const placed = await client.placeCall({ to: "+15550199", metadata: { client: "node" } });
  assert.match(placed.callId, /^call_[0-9a-f]{32}$/);
  assert.equal(placed.emulated, true);

  const statuses = [];
  let last = 0n;
  for await (const { event } of client.watchCall({ callId: placed.callId })) {
    assert.ok(event);
    assert.equal(event.sequence, last + 1n, "gapless sequences");
    last = event.sequence;
    if (event.kind.case === "status") statuses.push(event.kind.value.status);
  }
  assert.equal(statuses.at(-1), CallStatus.COMPLETED, server.log.slice(-20).join(""));

  const { call } = await client.getCall({ callId: placed.callId });
  assert.ok(call);
  assert.ok(isTerminal(call));
  assert.equal(call.eventCount, last);
  // uint64 is a bigint: plain JSON.stringify throws; the proto3 JSON form does not.
  assert.throws(() => JSON.stringify(call), TypeError);
  const json = /** @type {Record<string, unknown>} */ (toJsonValue(CallSchema, call));
  assert.equal(json["eventCount"], String(last));
  assert.equal(json["status"], "CALL_STATUS_COMPLETED");
  assert.equal(json["from"], call.from);
  assert.ok(JSON.stringify(json).includes(placed.callId));
});

for (const [name, transport] of [
  ["gRPC", () => createGrpcTransport({ baseUrl: server.baseUrl })],
  ["grpc-web", () => createGrpcWebTransport({ baseUrl: server.baseUrl })],
]) {
  test(`a refused PlaceCall carries its ErrorInfo and the stored call's id (${name})`, async () => {
    const client = createClient(VoiceAgentService, /** @type {() => any} */ (transport)());
    const err = await client.placeCall({ to: "+15005550001" }).then(
      () => assert.fail("the provider should refuse +15005550001"),
      (e) => e,
    );
    assert.ok(err instanceof ConnectError);
    assert.equal(err.code, Code.InvalidArgument);
    const details = errorDetails(err);
    assert.equal(details.reason, "TWILIO_ERROR");
    assert.equal(details.domain, "voice-agent");
    assert.equal(details.metadata["provider_code"], "21211");
    assert.ok(details.callId);
    const { call } = await client.getCall({ callId: details.callId });
    assert.equal(call?.status, CallStatus.FAILED);

    const bad = await client.placeCall({ to: "12345" }).then(
      () => assert.fail("an invalid number was accepted"),
      (e) => e,
    );
    const badDetails = errorDetails(bad);
    assert.equal(badDetails.reason, "INVALID_ARGUMENT");
    assert.deepEqual(
      badDetails.fieldViolations.map((v) => v.field),
      ["to"],
    );
  });
}
