#!/usr/bin/env python3
"""Writes the starting seeds of corpus/NAME/ (run from fuzz/; it overwrites
only the files it names). Crash inputs are added by hand, each under a name
ending in -regression that says what broke; they are never generated here."""
import os

def put(target, name, data):
    os.makedirs(f"corpus/{target}", exist_ok=True)
    with open(f"corpus/{target}/{name}", "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

# plan: byte 0 picks the listener (bit 0 redirect_https, bit 1 https,
# bit 2 an IPv6 peer); the rest is the client buffer.
heads = {
    "get-root": "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    "get-api-strip": "GET /api/users?id=1 HTTP/1.1\r\nHost: h\r\nCookie: srv=1\r\n\r\n",
    "post-length": "POST /api/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    "post-chunked": "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "cached-gzip": "GET /c/x HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n",
    "canary-conditions": "GET /c/x HTTP/1.1\r\nHost: h\r\nX-Canary: 1\r\nCookie: beta=1\r\n\r\n",
    "split-wildcard": "GET /s HTTP/1.1\r\nHost: www.example.com:8080\r\n\r\n",
    "static-host": "GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n",
    "static-path": "GET /static/../x HTTP/1.1\r\nHost: h\r\n\r\n",
    "redirect": "GET /old/a?b=c HTTP/1.1\r\nHost: h\r\n\r\n",
    "respond": "HEAD /hello HTTP/1.0\r\nHost: example.org\r\n\r\n",
    "absolute-form": "GET http://x.example.com/p?q HTTP/1.1\r\nHost: ignored\r\n\r\n",
    "options-asterisk": "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    "upgrade": "GET /c/ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    "xff": "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\nConnection: close, x\r\nX: 1\r\n\r\n",
}
for name, head in heads.items():
    put("plan", name, b"\x00" + head.encode())
put("plan", "to-https", b"\x01GET /a?b HTTP/1.1\r\nHost: h:8080\r\n\r\n")
put("plan", "https-v6", b"\x06GET / HTTP/1.1\r\nHost: [::1]:443\r\n\r\n")

# chunked: byte 0 is the size of the pieces the body is fed in.
bodies = {
    "simple": b"5\r\nhello\r\n0\r\n\r\n",
    "extensions": b"5;a=b;c=\"d;e\"\r\nhello\r\n3 ;x\r\nabc\r\n0\r\n\r\n",
    "trailers": b"1\r\nx\r\n0\r\nT: 1\r\nU: 2\r\n\r\nNEXT",
    "upper-hex": b"A\r\n0123456789\r\n0\r\n\r\n",
    "long-size": b"00000000000000a\r\n0123456789\r\n0\r\n\r\n",
}
for name, body in bodies.items():
    put("chunked", name, b"\x03" + body)

# response_head: byte 0 bit 0 says the request was HEAD, bits 1-2 the
# framing and persistence written to the client.
responses = {
    "length": "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    "chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    "close": "HTTP/1.0 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\n",
    "no-content": "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
    "switching": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    "bare-lf": "HTTP/1.1 302 Found\nLocation: /x\nContent-Length: 0\n\n",
}
for name, head in responses.items():
    put("response_head", name, b"\x02" + head.encode())

# config: the shipped file, and one with every section.
with open("../ringside.toml", "rb") as f:
    put("config", "shipped", f.read())
put("config", "every-section", """[runtime]
workers = 2
shutdown_timeout = "5s"

[log]
access = "stdout"
access_format = "json"
error = "stderr"
level = "info"

[limits]
client_header_timeout = "10s"
max_request_head = "16k"
max_request_body = "1m"

[cache]
size = "1m"

[[listen]]
address = "127.0.0.1:8080"
hsts = "max-age=60"

[[listen]]
address = "127.0.0.1:8443"
http2 = true
tls = { cert = "cert.pem", key = "key.pem" }

[[upstream]]
name = "app"
balance = "least_conn"
keepalive = 8
servers = [ { address = "127.0.0.1:3000", weight = 3 }, { address = "127.0.0.1:3001", backup = true } ]
health = { path = "/health", interval = "2s", timeout = "1s", fails = 3, passes = 2 }
sticky = { cookie = "r" }

[[route]]
host = "*.example.com"
path = "/"
split = [ { upstream = "app", weight = 95 } ]

[[route]]
path = "/old/"
redirect = { to = "https://example.com$request_uri", status = 301 }

[[route]]
path = "/x"
respond = { status = 200, body = "ok" }
cache = { "200" = "60m" }
gzip = { types = ["text/plain"], min_length = 10 }
""")

# h2: byte 0 even: frames as type, flags, stream, length (2 bytes), payload.
def frame(ty, flags, stream, payload):
    return bytes([ty, flags, stream, len(payload) >> 8, len(payload) & 255]) + payload

def lit(name, value):
    """A literal field without indexing, new name (RFC 7541 section 6.2.2)."""
    return bytes([0, len(name)]) + name.encode() + bytes([len(value)]) + value.encode()

def block(method, path, *extra):
    b = lit(":method", method) + lit(":scheme", "https") + lit(":path", path)
    b += lit(":authority", "localhost")
    for name, value in extra:
        b += lit(name, value)
    return b

END_STREAM, END_HEADERS = 1, 4
for name, path in [("hello", "/hello"), ("upstream", "/"), ("cached", "/c/x"),
                   ("static", "/static/a.txt"), ("redirect", "/old/x"),
                   ("down", "/down/x"), ("split", "/split/x"), ("chunked", "/chunked"),
                   ("big", "/big"), ("close", "/close")]:
    put("h2", "get-" + name, b"\x00" + frame(1, END_STREAM | END_HEADERS, 1, block("GET", path)))
put("h2", "post-data", b"\x00"
    + frame(1, END_HEADERS, 1, block("POST", "/", ("content-length", "5")))
    + frame(0, END_STREAM, 1, b"hello"))
put("h2", "post-no-length", b"\x00"
    + frame(1, END_HEADERS, 3, block("PUT", "/chunked"))
    + frame(0, 0, 3, b"abc") + frame(0, END_STREAM, 3, b"def"))
put("h2", "streams-and-reset", b"\x00"
    + frame(1, END_STREAM | END_HEADERS, 1, block("GET", "/big"))
    + frame(1, END_STREAM | END_HEADERS, 3, block("HEAD", "/static/", ("range", "bytes=0-1")))
    + frame(3, 0, 1, b"\x00\x00\x00\x08")
    + frame(8, 0, 0, b"\x00\x01\x00\x00")
    + frame(6, 0, 0, b"12345678"))
hb = block("GET", "/hello", ("cookie", "a=1"), ("cookie", "b=2"))
put("h2", "continuation", b"\x00"
    + frame(1, END_STREAM, 5, hb[:10]) + frame(9, END_HEADERS, 5, hb[10:]))
put("h2", "settings-priority", b"\x00"
    + frame(4, 0, 0, b"\x00\x04\x00\x00\xff\xff")
    + frame(2, 0, 1, b"\x00\x00\x00\x00\x10")
    + frame(1, END_STREAM | END_HEADERS | 0x20, 1, b"\x00\x00\x00\x00\x10" + block("GET", "/")))
raw = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # a SETTINGS frame, written as is
put("h2", "raw", b"\x01" + raw)

# proxy_protocol: a PROXY header, usually followed by the first request bytes.
def v2(cmd, fam, body):
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20 | cmd, fam]) + len(body).to_bytes(2, "big") + body
inet = bytes([192, 0, 2, 1, 10, 0, 0, 9, 0xdb, 0x8a, 0, 80])
inet6 = bytes(15) + b"\x01" + bytes(15) + b"\x02" + bytes([0x30, 0x39, 1, 0xbb])
put("proxy_protocol", "v1-tcp4", b"PROXY TCP4 192.0.2.1 10.0.0.9 56202 80\r\nGET / HTTP/1.1\r\n\r\n")
put("proxy_protocol", "v1-tcp6", b"PROXY TCP6 2001:db8::1 2001:db8::2 56202 443\r\n")
put("proxy_protocol", "v1-unknown", b"PROXY UNKNOWN\r\n")
put("proxy_protocol", "v2-proxy-inet", v2(1, 0x11, inet) + b"GET / HTTP/1.1\r\n\r\n")
put("proxy_protocol", "v2-proxy-inet6", v2(1, 0x21, inet6))
put("proxy_protocol", "v2-local", v2(0, 0x00, b""))
put("proxy_protocol", "v2-unix", v2(1, 0x31, bytes(216)))
put("proxy_protocol", "v2-tlvs", v2(1, 0x11, inet + b"\x02\x00\x09a.example\x04\x00\x03\x00\x00\x00"))
