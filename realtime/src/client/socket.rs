//! The transport: one connection attempt (TCP + upgrade with the bearer
//! token), the writer half, and checks on URLs and tokens.

use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header::AUTHORIZATION, HeaderValue, StatusCode, Uri};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{connect_async_with_config, MaybeTlsStream, WebSocketStream};

use super::{ClientError, ClientOptions};

pub(super) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the connection task hands the writer.
pub(super) enum WriterMsg {
    Frame(Vec<u8>),
    Close(CloseFrame),
}

/// Writes frames as they come; frames queued together are flushed once.
pub(super) async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut rx: mpsc::Receiver<WriterMsg>,
) -> Result<(), WsError> {
    while let Some(msg) = rx.recv().await {
        let mut next = Some(msg);
        while let Some(msg) = next.take() {
            match msg {
                WriterMsg::Frame(f) => sink.feed(Message::Binary(f.into())).await?,
                WriterMsg::Close(frame) => {
                    sink.send(Message::Close(Some(frame))).await?;
                    return Ok(());
                }
            }
            next = rx.try_recv().ok();
        }
        sink.flush().await?;
    }
    Ok(())
}

pub(super) enum ConnectError {
    Unauthorized(String),
    Other(String),
}

/// One connection attempt: TCP, upgrade with the bearer token, within the
/// connect timeout.
pub(super) async fn open(
    url: String,
    token: String,
    opts: ClientOptions,
) -> Result<Ws, ConnectError> {
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectError::Other(e.to_string()))?;
    let auth = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| ConnectError::Unauthorized("the token is not a valid header value".into()))?;
    req.headers_mut().insert(AUTHORIZATION, auth);
    let config = WebSocketConfig::default()
        .read_buffer_size(opts.read_buffer_bytes.max(256))
        .max_message_size(Some(opts.max_incoming_frame_bytes))
        .max_frame_size(Some(opts.max_incoming_frame_bytes));
    let attempt = connect_async_with_config(req, Some(config), true);
    match tokio::time::timeout(opts.connect_timeout, attempt).await {
        Err(_) => Err(ConnectError::Other(format!(
            "no connection within {:?}",
            opts.connect_timeout
        ))),
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(WsError::Http(resp))) => {
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(512)]).into_owned())
                .unwrap_or_default();
            let msg = format!("HTTP {}: {body}", resp.status());
            if resp.status() == StatusCode::UNAUTHORIZED {
                Err(ConnectError::Unauthorized(msg))
            } else {
                Err(ConnectError::Other(msg))
            }
        }
        Ok(Err(e)) => Err(ConnectError::Other(e.to_string())),
    }
}

/// `ws://host:port` gets the protocol's path `/v1/ws`; `http(s)://` becomes
/// `ws(s)://`; a URL with a path is used as given.
pub(super) fn normalize_url(url: &str) -> Result<String, ClientError> {
    let bad = |why: &str| ClientError::InvalidArgument(format!("bad URL {url:?}: {why}"));
    let uri: Uri = url
        .parse()
        .map_err(|e: tokio_tungstenite::tungstenite::http::uri::InvalidUri| bad(&e.to_string()))?;
    let url = match uri.scheme_str() {
        Some("ws") | Some("wss") => url.to_owned(),
        Some("http") => format!("ws{}", &url[4..]),
        Some("https") => format!("wss{}", &url[5..]),
        _ => return Err(bad("expected ws://host:port")),
    };
    if uri.host().is_none() {
        return Err(bad("no host"));
    }
    let bare = uri
        .path_and_query()
        .is_none_or(|pq| pq.as_str().is_empty() || pq.as_str() == "/");
    Ok(if bare {
        format!("{}/v1/ws", url.trim_end_matches('/'))
    } else {
        url
    })
}

pub(super) fn check_token(token: &str) -> Result<(), ClientError> {
    if token.is_empty() || HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
        return Err(ClientError::InvalidArgument(
            "the token must be non-empty and printable ASCII".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            normalize_url("ws://127.0.0.1:8080").unwrap(),
            "ws://127.0.0.1:8080/v1/ws"
        );
        assert_eq!(normalize_url("ws://h:1/").unwrap(), "ws://h:1/v1/ws");
        assert_eq!(normalize_url("http://h:1").unwrap(), "ws://h:1/v1/ws");
        assert_eq!(normalize_url("https://h").unwrap(), "wss://h/v1/ws");
        assert_eq!(
            normalize_url("ws://h:1/custom/ws").unwrap(),
            "ws://h:1/custom/ws"
        );
        assert_eq!(
            normalize_url("ws://h:1/v1/ws?x=1").unwrap(),
            "ws://h:1/v1/ws?x=1"
        );
        for bad in ["", "h:1", "ftp://h", "not a url"] {
            assert!(normalize_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens() {
        assert!(check_token("eyJ.abc.def").is_ok());
        assert!(check_token("").is_err());
        assert!(check_token("a\nb").is_err());
    }
}
