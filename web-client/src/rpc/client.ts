// The one way the UI talks to the server: generated VoiceAgentService client over grpc-web,
// on the page's own origin (the Rust server serves both the UI and grpc-web on one port).
import { type Client, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { VoiceAgentService } from "@voice-agent/client";
import type { OpenWatchStream } from "../model/watch";

/** Typed client of the service. */
export type VoiceAgentClient = Client<typeof VoiceAgentService>;

/** grpc-web transport to `baseUrl` (the page origin in production; the Vite proxy in dev). */
export function grpcWebTransport(baseUrl: string, interceptors: Interceptor[]): Transport {
  return createGrpcWebTransport({ baseUrl, interceptors });
}

/** Client over any transport (grpc-web in the browser, an in-memory router in tests and ?demo). */
export function voiceAgentClient(transport: Transport): VoiceAgentClient {
  return createClient(VoiceAgentService, transport);
}

/** Adapts the client's WatchCall to the resumable watcher's stream opener. */
export function openWatchStream(client: VoiceAgentClient): OpenWatchStream {
  return async function* (request, options) {
    const responses = client.watchCall(
      { callId: request.callId, afterSequence: request.afterSequence },
      { signal: options.signal, onHeader: options.onHeader },
    );
    for await (const response of responses) {
      if (response.event) yield response.event;
    }
  };
}
