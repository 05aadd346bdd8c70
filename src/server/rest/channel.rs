//! The channel protocol of `pods/exec` and `pods/attach` over WebSocket
//! (`v5.channel.k8s.io`, and `v4.channel.k8s.io` without half-close): every
//! binary message starts with its channel byte; the error channel carries
//! one `Status` with the exit code, as upstream's kubelet writes it.

use crate::agent::exec::TerminalSize;
use bytes::Bytes;
use serde_json::{Value, json};

pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";
/// What this server speaks, best first.
pub const PROTOCOLS: [&str; 2] = [V5, V4];

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: `[255, channel]` half-closes `channel`.
pub const CLOSE: u8 = 255;

/// A message from the client, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientFrame {
    Stdin(Bytes),
    Resize(TerminalSize),
    /// The client finished writing stdin (EOF for the process).
    CloseStdin,
    /// Empty messages, closes of other channels, unknown channels.
    Ignored,
}

/// Decodes one binary message; `Err` for a protocol error that ends the stream.
pub fn decode(protocol: &str, data: &[u8]) -> Result<ClientFrame, String> {
    let Some((&channel, payload)) = data.split_first() else { return Ok(ClientFrame::Ignored) };
    match channel {
        CLOSE if protocol == V5 => match payload {
            [STDIN] => Ok(ClientFrame::CloseStdin),
            [_] => Ok(ClientFrame::Ignored),
            _ => Err(format!("a close signal names one channel, got {} bytes", payload.len())),
        },
        STDIN => Ok(ClientFrame::Stdin(Bytes::copy_from_slice(payload))),
        RESIZE => serde_json::from_slice::<TerminalSize>(payload)
            .map(ClientFrame::Resize)
            .map_err(|err| format!("invalid resize message: {err}")),
        _ => Ok(ClientFrame::Ignored),
    }
}

/// One server message on `channel`.
pub fn frame(channel: u8, data: &[u8]) -> Bytes {
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel);
    message.extend_from_slice(data);
    Bytes::from(message)
}

/// The error-channel `Status` for a process that exited with `code`.
pub fn exit_status(code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command [exit status {code}]"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The error-channel `Status` for a command that could not run.
pub fn failure_status(message: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: error executing command in container: {message}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": format!("error executing command in container: {message}")}]},
        "code": 500,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_client_messages() {
        assert_eq!(decode(V5, &[STDIN, b'h', b'i']), Ok(ClientFrame::Stdin(Bytes::from_static(b"hi"))));
        assert_eq!(decode(V5, &[CLOSE, STDIN]), Ok(ClientFrame::CloseStdin));
        assert_eq!(decode(V5, &[CLOSE, RESIZE]), Ok(ClientFrame::Ignored));
        assert!(decode(V5, &[CLOSE, 0, 1]).is_err());
        // v4 has no close signal: 255 is just an unknown channel.
        assert_eq!(decode(V4, &[CLOSE, STDIN]), Ok(ClientFrame::Ignored));
        assert_eq!(decode(V5, &[]), Ok(ClientFrame::Ignored));
        assert_eq!(
            decode(V5, &[&[RESIZE][..], br#"{"Width":120,"Height":40}"#].concat()),
            Ok(ClientFrame::Resize(TerminalSize { width: 120, height: 40 }))
        );
        assert!(decode(V5, &[RESIZE, b'{']).is_err());
    }

    #[test]
    fn frames_carry_their_channel() {
        assert_eq!(&frame(STDOUT, b"out")[..], b"\x01out");
        assert_eq!(&frame(ERROR, b"")[..], b"\x03");
    }

    #[test]
    fn exit_codes_as_kubectl_reads_them() {
        assert_eq!(exit_status(0)["status"], "Success");
        let failed = exit_status(3);
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0], json!({"reason": "ExitCode", "message": "3"}));
        let broken = failure_status("exec: \"nope\": not found");
        assert_eq!(broken["reason"], "InternalError");
    }
}
