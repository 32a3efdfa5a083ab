//! The server's accepted connections, as HTTP/2 should write to them.
//!
//! h2 writes a DATA frame whose payload is larger than 256 bytes by chaining the payload to its
//! write buffer, and holds only one chained frame at a time: every such frame is a `writev` of
//! its own. A watch stream's change is a frame of about a kilobyte, so with thousands of
//! streams the server made one system call per delivered change (measured: 0.7 a delivery,
//! most of the server's CPU). A connection that reports no vectored writes makes h2 copy
//! payloads of up to 1 KiB into its 16 KiB write buffer instead, so the frames that are ready
//! together leave in one `write`. Larger payloads are still chained (two writes instead of
//! one `writev`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// An accepted TCP connection without vectored writes (see the module docs for why).
#[derive(Debug)]
pub struct CoalescedWrites(TcpStream);

impl CoalescedWrites {
    pub fn new(stream: TcpStream) -> Self {
        Self(stream)
    }
}

impl Connected for CoalescedWrites {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.connect_info()
    }
}

impl AsyncRead for CoalescedWrites {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for CoalescedWrites {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    // `is_write_vectored` keeps its default, `false`: that is the point of this type.
}
