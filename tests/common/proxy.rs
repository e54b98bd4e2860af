//! A TCP forwarder on loopback that a test can cut: the way to make one replica lose its
//! storage while the others keep it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Forwards connections from its own port to `target` until cut.
pub struct Proxy {
    addr: SocketAddr,
    cut: CancellationToken,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = CancellationToken::new();
        let stop = cut.clone();
        tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        connections.spawn(async move {
                            if let Ok(mut outbound) = TcpStream::connect(target).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                        });
                    }
                    _ = stop.cancelled() => break,
                }
            }
            // The listener closes (its port refuses connections) and every open connection
            // drops.
            connections.abort_all();
        });
        Arc::new(Self { addr, cut })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the port and every connection through it.
    pub fn cut(&self) {
        self.cut.cancel();
    }
}
