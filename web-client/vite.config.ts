import react from "@vitejs/plugin-react";
import { defaultClientConditions } from "vite";
import { defineConfig } from "vitest/config";

// The Rust server serves grpc-web and this UI on one origin (default http://127.0.0.1:8000).
// For UI work, `npm run dev` serves the UI from Vite and forwards the RPC paths to that server,
// so the browser still talks to one origin. VOICE_AGENT_URL overrides the target. The server still
// sees this page's Origin (http://127.0.0.1:5173), so list it in the server's CORS_ALLOWED_ORIGINS.
const target = process.env.VOICE_AGENT_URL ?? "http://127.0.0.1:8000";
const proxy = {
  "/voiceagent.v1.VoiceAgentService": { target, changeOrigin: true },
};

export default defineConfig({
  plugins: [react()],
  // @voice-agent/client (../clients/typescript) is read from its TypeScript sources (its
  // "voice-agent-source" export condition), and the libraries it imports resolve to this package's
  // node_modules: one copy of @bufbuild/protobuf and @connectrpc/connect, whichever dependencies the
  // client package has installed for its own tests.
  resolve: {
    conditions: ["voice-agent-source", ...defaultClientConditions],
    dedupe: ["@bufbuild/protobuf", "@connectrpc/connect"],
  },
  // Absolute asset URLs: the server also answers deep links such as /calls/<id> with index.html,
  // whose assets must still load from /assets/.
  base: "/",
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false },
  server: { host: "127.0.0.1", port: 5173, proxy },
  preview: { host: "127.0.0.1", port: 4173, proxy },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.{ts,tsx}"],
    restoreMocks: true,
  },
});
