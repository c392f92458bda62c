//! A client of `GET /v1/ws`, for the tests and the load generator: JSON in, JSON out.

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket failed.
    #[error(transparent)]
    WebSocket(#[from] tungstenite::Error),
    /// The server closed the connection.
    #[error("closed by the server: {code} {reason}")]
    Closed {
        /// Close code.
        code: u16,
        /// Reason.
        reason: String,
    },
    /// Nothing arrived in time.
    #[error("nothing within {0:?}")]
    Timeout(Duration),
    /// The server answered a request with an error.
    #[error("refused: {0}")]
    Refused(Value),
}

/// One stream connection.
pub struct StreamClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Messages read while waiting for an answer, handed out by [`StreamClient::next`] first.
    pending: std::collections::VecDeque<Value>,
}

impl StreamClient {
    /// Connects to `url` (`ws://host:port/v1/ws`) with `key` in the `Authorization` header and
    /// reads the welcome.
    pub async fn connect(url: &str, key: &str) -> Result<(StreamClient, Value), ClientError> {
        let mut request = url.into_client_request()?;
        let bearer = format!("Bearer {key}");
        if let Ok(value) = bearer.parse() {
            request.headers_mut().insert("authorization", value);
        }
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
        StreamClient::welcomed(socket).await
    }

    /// Wraps a socket already upgraded (say, one with a small receive buffer) and reads the
    /// welcome.
    pub async fn welcomed(
        socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    ) -> Result<(StreamClient, Value), ClientError> {
        let mut client = StreamClient {
            socket,
            next_id: 1,
            pending: Default::default(),
        };
        let welcome = client.next(Duration::from_secs(10)).await?;
        Ok((client, welcome))
    }

    /// Wraps a socket that has not authenticated: the first request must be `auth`.
    pub fn unauthenticated(socket: WebSocketStream<MaybeTlsStream<TcpStream>>) -> StreamClient {
        StreamClient {
            socket,
            next_id: 1,
            pending: Default::default(),
        }
    }

    /// Sends a request as it is.
    pub async fn send(&mut self, request: Value) -> Result<(), ClientError> {
        self.socket.send(Message::text(request.to_string())).await?;
        Ok(())
    }

    /// Subscribes to a channel (`account` for private ones, `symbol` for public ones), resuming
    /// after `cursor` if given; returns the answer (`ack` or `resync`).
    pub async fn subscribe(
        &mut self,
        channel: &str,
        name: &str,
        cursor: Option<&str>,
    ) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let field = match channel {
            "orders" | "fills" | "balances" => "account",
            _ => "symbol",
        };
        let mut request = json!({"op": "subscribe", "id": id, "channel": channel, field: name});
        if let Some(cursor) = cursor {
            request["cursor"] = json!(cursor);
        }
        self.send(request).await?;
        self.answer(id).await
    }

    /// Waits for the answer to request `id`, keeping the updates read meanwhile.
    async fn answer(&mut self, id: u64) -> Result<Value, ClientError> {
        let mut kept = Vec::new();
        let answer = loop {
            let message = self.read(Duration::from_secs(10)).await?;
            if message["id"] == id {
                break message;
            }
            kept.push(message);
        };
        self.pending.extend(kept);
        match answer["type"].as_str() {
            Some("error") => Err(ClientError::Refused(answer)),
            _ => Ok(answer),
        }
    }

    /// The next message from the server, heartbeats included.
    pub async fn next(&mut self, within: Duration) -> Result<Value, ClientError> {
        if let Some(message) = self.pending.pop_front() {
            return Ok(message);
        }
        self.read(within).await
    }

    /// The next message that is not a heartbeat.
    pub async fn update(&mut self, within: Duration) -> Result<Value, ClientError> {
        loop {
            let message = self.next(within).await?;
            if message["type"] != "heartbeat" {
                return Ok(message);
            }
        }
    }

    /// The next message's text, unparsed (for counting at volume).
    pub async fn next_text(&mut self, within: Duration) -> Result<String, ClientError> {
        if let Some(message) = self.pending.pop_front() {
            return Ok(message.to_string());
        }
        loop {
            let message = tokio::time::timeout(within, self.socket.next())
                .await
                .map_err(|_| ClientError::Timeout(within))?;
            match message {
                Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
                Some(Ok(Message::Close(_))) | None => {
                    return Err(ClientError::Closed {
                        code: 1006,
                        reason: "closed".into(),
                    });
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(error.into()),
            }
        }
    }

    async fn read(&mut self, within: Duration) -> Result<Value, ClientError> {
        loop {
            let message = tokio::time::timeout(within, self.socket.next())
                .await
                .map_err(|_| ClientError::Timeout(within))?;
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f: CloseFrame| {
                        (f.code.into(), f.reason.to_string())
                    });
                    return Err(ClientError::Closed { code, reason });
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(error.into()),
                None => {
                    return Err(ClientError::Closed {
                        code: 1006,
                        reason: "connection lost".into(),
                    });
                }
            }
        }
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
