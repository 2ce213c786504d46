import { Code } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { FakeVoiceAgent } from "../fake/fakeService";
import { AuthStore, authInterceptor } from "./auth";
import { voiceAgentClient } from "./client";

afterEach(() => window.sessionStorage.clear());

describe("AuthStore", () => {
  it("keeps the token in sessionStorage and notifies subscribers", () => {
    const store = new AuthStore(window.sessionStorage);
    let calls = 0;
    store.subscribe(() => (calls += 1));
    expect(store.getSnapshot()).toMatchObject({ token: "", required: false });
    store.setToken("  s3cret ");
    expect(window.sessionStorage.getItem("voiceagent.apiToken")).toBe("s3cret");
    expect(store.getSnapshot()).toMatchObject({ token: "s3cret", required: true, version: 1 });
    expect(new AuthStore(window.sessionStorage).token).toBe("s3cret");
    store.setToken("");
    expect(window.sessionStorage.getItem("voiceagent.apiToken")).toBeNull();
    expect(calls).toBe(2);
  });

  it("works without storage", () => {
    const store = new AuthStore(undefined);
    store.setToken("t");
    expect(store.token).toBe("t");
  });
});

describe("authInterceptor", () => {
  it("sends the bearer token and flags UNAUTHENTICATED answers", async () => {
    const store = new AuthStore(window.sessionStorage);
    const fake = new FakeVoiceAgent({ token: "s3cret", interceptors: [authInterceptor(store)] });
    const client = voiceAgentClient(fake.transport());
    await expect(client.listCalls({})).rejects.toMatchObject({ code: Code.Unauthenticated });
    expect(store.getSnapshot()).toMatchObject({ required: true, lastError: "missing or wrong API token" });
    store.setToken("s3cret");
    await expect(client.listCalls({})).resolves.toMatchObject({ calls: [] });
    store.setToken("wrong");
    await expect(client.listCalls({})).rejects.toMatchObject({ code: Code.Unauthenticated });
  });
});
