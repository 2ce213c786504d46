//! `call --tools FILE` and `--tool-handler CMD`: the tools a call offers the
//! agent, read from a JSON file, and a shell command that answers each tool
//! call while the CLI follows the call.
//!
//! The file is a JSON array of `{"name", "description", "parameters", "url"}`
//! (`parameters`: a JSON Schema object; `url` optional: the server asks it
//! instead, signed with its WEBHOOK_SECRET). The handler runs once per tool
//! call the server does not answer itself, as `sh -c CMD`, with the
//! arguments (JSON) on stdin and `VOICE_AGENT_CALL_ID`,
//! `VOICE_AGENT_TOOL_CALL_ID` and `VOICE_AGENT_TOOL_NAME` in its
//! environment; its stdout is the output. A failed handler (non-zero exit,
//! no output, over 64 KiB, or still running after [`HANDLER_TIMEOUT`])
//! answers with an error output the agent hears, and the CLI says so on stderr.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use voice_agent_proto::v1 as pb;

use crate::client::{Client, describe_status};

/// Longest a handler may run: the longest tool timeout a call can have.
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(120);
/// Most output taken from a handler (the server's limit).
pub const MAX_OUTPUT: usize = 64 * 1024;
/// Largest tools file read.
const MAX_FILE: u64 = 1024 * 1024;

/// Reads a tools file into PlaceCall's `tools`; the message says what is wrong.
pub fn read_tools(path: &std::path::Path) -> Result<Vec<pb::Tool>, String> {
    let name = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("--tools {name}: {e}"))?;
    if meta.len() > MAX_FILE {
        return Err(format!("--tools {name}: larger than {MAX_FILE} bytes"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("--tools {name}: {e}"))?;
    parse_tools(&text).map_err(|e| format!("--tools {name}: {e}"))
}

/// Parses the JSON of a tools file.
pub fn parse_tools(text: &str) -> Result<Vec<pb::Tool>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let list = v.as_array().ok_or("expected a JSON array of tools")?;
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let obj = t.as_object().ok_or(format!("tool {i}: expected an object"))?;
            let text = |k: &str| -> Result<String, String> {
                match obj.get(k) {
                    None | Some(Value::Null) => Ok(String::new()),
                    Some(Value::String(s)) => Ok(s.clone()),
                    Some(_) => Err(format!("tool {i}: {k} must be a string")),
                }
            };
            if let Some(k) = obj
                .keys()
                .find(|k| !["name", "description", "parameters", "url"].contains(&k.as_str()))
            {
                return Err(format!(
                    "tool {i}: unknown key {k:?} (name, description, parameters, url)"
                ));
            }
            let name = text("name")?;
            if name.is_empty() {
                return Err(format!("tool {i}: name is required"));
            }
            let parameters_json = match obj.get("parameters") {
                None | Some(Value::Null) => String::new(),
                Some(p @ Value::Object(_)) => p.to_string(),
                Some(_) => return Err(format!("tool {i}: parameters must be a JSON Schema object")),
            };
            Ok(pb::Tool {
                name,
                description: text("description")?,
                parameters_json,
                url: text("url")?,
            })
        })
        .collect()
}

/// Answers one tool call with `cmd` (in its own task, so the watch goes on
/// and parallel calls run in parallel).
pub fn spawn_handler(client: Client, cmd: String, call_id: String, call: pb::ToolCall) {
    tokio::spawn(async move {
        let output = match run_handler(&cmd, &call_id, &call).await {
            Ok(output) => output,
            Err(why) => {
                eprintln!(
                    "error: the tool handler failed for {} ({}): {why}",
                    call.name, call.tool_call_id
                );
                serde_json::json!({"error": format!("the tool failed: {why}")}).to_string()
            }
        };
        let mut client = client;
        let request = pb::SubmitToolResultRequest {
            call_id,
            tool_call_id: call.tool_call_id.clone(),
            output,
        };
        if let Err(status) = client.submit_tool_result(request).await {
            eprintln!(
                "error: SubmitToolResult for {} ({}): {}",
                call.name,
                call.tool_call_id,
                describe_status(&status)
            );
        }
    });
}

/// Runs the handler; its trimmed stdout.
async fn run_handler(cmd: &str, call_id: &str, call: &pb::ToolCall) -> Result<String, String> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("VOICE_AGENT_CALL_ID", call_id)
        .env("VOICE_AGENT_TOOL_CALL_ID", &call.tool_call_id)
        .env("VOICE_AGENT_TOOL_NAME", &call.name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start sh: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let arguments = call.arguments_json.clone();
    let run = async move {
        // A handler that ignores its stdin must not fail the call: a broken pipe is fine.
        let _ = stdin.write_all(arguments.as_bytes()).await;
        drop(stdin);
        let mut out = Vec::new();
        (&mut stdout)
            .take(MAX_OUTPUT as u64 + 1)
            .read_to_end(&mut out)
            .await
            .map_err(|e| format!("reading its output: {e}"))?;
        let status = child.wait().await.map_err(|e| format!("waiting for it: {e}"))?;
        Ok::<_, String>((out, status))
    };
    let (out, status) = tokio::time::timeout(HANDLER_TIMEOUT, run)
        .await
        .map_err(|_| format!("still running after {} s; stopped", HANDLER_TIMEOUT.as_secs()))??;
    if out.len() > MAX_OUTPUT {
        return Err(format!("its output is over {MAX_OUTPUT} bytes"));
    }
    if !status.success() {
        return Err(format!("it exited with {status}"));
    }
    let text = String::from_utf8(out).map_err(|_| "its output is not UTF-8".to_string())?;
    let text = text.trim();
    if text.is_empty() {
        return Err("it printed nothing".into());
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tools_file_becomes_the_requests_tools() {
        let tools = parse_tools(
            r#"[{"name":"order_status","description":"Look up an order.",
                 "parameters":{"type":"object","properties":{"order_id":{"type":"string"}}}},
                {"name":"refund","url":"https://tools.example.com/refund"}]"#,
        )
        .unwrap();
        assert_eq!(tools.len(), 2);
        assert_eq!(tools[0].name, "order_status");
        let p: Value = serde_json::from_str(&tools[0].parameters_json).unwrap();
        assert_eq!(p["properties"]["order_id"]["type"], "string");
        assert_eq!(tools[1].url, "https://tools.example.com/refund");
        assert!(tools[1].parameters_json.is_empty());
    }

    #[test]
    fn a_bad_tools_file_says_what_is_wrong() {
        assert!(parse_tools("{}").unwrap_err().contains("array"));
        assert!(parse_tools("[{}]").unwrap_err().contains("name is required"));
        assert!(
            parse_tools(r#"[{"name":"a","parameters":"x"}]"#)
                .unwrap_err()
                .contains("parameters")
        );
        assert!(
            parse_tools(r#"[{"name":"a","nmae":"b"}]"#)
                .unwrap_err()
                .contains("unknown key")
        );
        assert!(parse_tools("[").unwrap_err().contains("not JSON"));
    }

    #[tokio::test]
    async fn the_handler_gets_the_arguments_and_its_stdout_is_the_output() {
        let call = pb::ToolCall {
            tool_call_id: "c1".into(),
            name: "order_status".into(),
            arguments_json: r#"{"order_id":"A1"}"#.into(),
            answered_by_url: false,
        };
        let out = run_handler(
            r#"printf '{"got":%s,"tool":"%s"}' "$(cat)" "$VOICE_AGENT_TOOL_NAME""#,
            "call_x",
            &call,
        )
        .await
        .unwrap();
        assert_eq!(out, r#"{"got":{"order_id":"A1"},"tool":"order_status"}"#);
        assert!(
            run_handler("exit 3", "call_x", &call)
                .await
                .unwrap_err()
                .contains("exit")
        );
        assert!(
            run_handler("true", "call_x", &call)
                .await
                .unwrap_err()
                .contains("nothing")
        );
    }
}
