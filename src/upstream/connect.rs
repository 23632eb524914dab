//! Opening a new upstream connection, bounded by `connect_timeout`.

use std::{net::SocketAddr, time::Duration};

use monoio::net::TcpStream;

use crate::error::{Error, Result};

pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
        Ok(Ok(stream)) => {
            // Heads and small bodies go out in one write each: Nagle would
            // only add a delay.
            stream.set_nodelay(true).map_err(Error::connect)?;
            Ok(stream)
        }
        Ok(Err(e)) => Err(Error::connect(e)),
        Err(_) => Err(Error::connect_timeout()),
    }
}
