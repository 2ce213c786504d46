//! Built-in emulators of the outside world, speaking the real wire protocols
//! over real sockets: [`twilio`] (REST API, signed webhooks, a scripted callee
//! on Media Streams) and [`realtime`] (Voice Live and OpenAI realtime). The
//! server starts them when credentials are missing, so a newcomer's first call
//! and every test run the production code paths (contract §4).

pub mod realtime;
pub mod twilio;
