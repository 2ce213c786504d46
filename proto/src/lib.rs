//! The `voiceagent.v1` contract: message types, the tonic client and server
//! for `VoiceAgentService`, and the encoded descriptor set for reflection.

/// `voiceagent.v1`: generated from `proto/voiceagent/v1/voice_agent.proto`.
pub mod v1 {
    tonic::include_proto!("voiceagent.v1");
}

/// Encoded `FileDescriptorSet` of the contract (and the well-known types it
/// imports), for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/voiceagent_descriptor.bin"));
