// throwaway prototype: minimal HTTP/1 forwarder to measure the floor
use std::io;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};

fn trick() -> bool { std::env::var_os("TRICK").is_some() }

async fn read_some(s: &TcpStream, buf: &mut Vec<u8>, t: bool) -> io::Result<usize> {
    let mut tmp = [0u8; 16384];
    loop {
        let mut got = 0usize;
        let r = s.try_io(Interest::READABLE, || {
            let n = nix::unistd::read(s, &mut tmp).map_err(io::Error::from)?;
            got = n;
            if t && n > 0 && n < tmp.len() { return Err(io::ErrorKind::WouldBlock.into()); }
            Ok(n)
        });
        match r {
            Ok(n) => { buf.extend_from_slice(&tmp[..n]); return Ok(n); }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if got > 0 { buf.extend_from_slice(&tmp[..got]); return Ok(got); }
                s.readable().await?;
            }
            Err(e) => return Err(e),
        }
    }
}

fn head_len(buf: &[u8]) -> Option<usize> { buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) }

async fn conn(mut client: TcpStream, target: std::net::SocketAddr) -> io::Result<()> {
    let t = trick();
    let mut cbuf = Vec::with_capacity(8192);
    let mut ubuf = Vec::with_capacity(8192);
    let mut out = Vec::with_capacity(8192);
    let mut up: Option<TcpStream> = None;
    loop {
        let hl = loop {
            if let Some(n) = head_len(&cbuf) { break n; }
            if read_some(&client, &mut cbuf, t).await? == 0 { return Ok(()); }
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(&cbuf[..hl]).map_err(|_| io::Error::other("parse"))?;
        out.clear();
        out.extend_from_slice(req.method.unwrap().as_bytes()); out.push(b' ');
        out.extend_from_slice(req.path.unwrap().as_bytes()); out.extend_from_slice(b" HTTP/1.1\r\n");
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("connection") || h.name.eq_ignore_ascii_case("keep-alive") { continue; }
            out.extend_from_slice(h.name.as_bytes()); out.extend_from_slice(b": "); out.extend_from_slice(h.value); out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: 8000\r\n\r\n");
        cbuf.drain(..hl);
        if up.is_none() { let s = TcpStream::connect(target).await?; s.set_nodelay(true)?; up = Some(s); }
        let u = up.as_mut().unwrap();
        u.write_all(&out).await?;
        ubuf.clear();
        let (rhl, cl) = loop {
            if let Some(n) = head_len(&ubuf) {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut res = httparse::Response::new(&mut headers);
                res.parse(&ubuf[..n]).map_err(|_| io::Error::other("parse"))?;
                let cl = res.headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-length")).map(|h| std::str::from_utf8(h.value).unwrap().parse::<usize>().unwrap()).unwrap_or(0);
                break (n, cl);
            }
            if read_some(u, &mut ubuf, t).await? == 0 { return Ok(()); }
        };
        while ubuf.len() < rhl + cl { if read_some(u, &mut ubuf, t).await? == 0 { return Ok(()); } }
        client.write_all(&ubuf[..rhl + cl]).await?;
    }
}

#[tokio::main]
async fn main() -> io::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let l = TcpListener::bind(("127.0.0.1", a[1].parse::<u16>().unwrap())).await?;
    let target: std::net::SocketAddr = a[2].parse().unwrap();
    loop {
        let (s, _) = l.accept().await?;
        s.set_nodelay(true)?;
        tokio::spawn(async move { let _ = conn(s, target).await; });
    }
}
