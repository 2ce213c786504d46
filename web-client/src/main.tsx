// Entry point: grpc-web to this page's origin, or the in-memory fake with `?demo`.
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { AuthStore, authInterceptor } from "./rpc/auth";
import { grpcWebTransport, voiceAgentClient } from "./rpc/client";
import "./styles.css";

async function start(): Promise<void> {
  const root = document.getElementById("root");
  if (!root) throw new Error("index.html has no #root");
  const auth = new AuthStore();
  const interceptors = [authInterceptor(auth)];
  const demo = new URLSearchParams(window.location.search).has("demo");
  // The fake is loaded only for ?demo, so it stays out of the main bundle.
  const transport = demo
    ? (await import("./fake/fakeService")).demoTransport(interceptors)
    : grpcWebTransport(window.location.origin, interceptors);
  createRoot(root).render(
    <StrictMode>
      <App client={voiceAgentClient(transport)} auth={auth} demo={demo} />
    </StrictMode>,
  );
}

void start();
