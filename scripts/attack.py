#!/usr/bin/env python3
"""Replays attacks against a running shopmesh stack and asserts each outcome.

Run by scripts/attack, which starts the stack (start_stack in scripts/lib.sh) and exports EDGE,
GATEWAY, GATEWAY_PORT, GRPC_PRODUCT, ADMIN_TOKEN, STACK_BIN, STACK_LOG, SHOPMESH_RUN_DIR,
GRPCURL, HEADER_READ_TIMEOUT_MS, ATTACK_IP_RATE and ATTACK_IP_BURST. Python 3.11 stdlib only;
Ed25519 signatures come from the openssl command line.

Prints one line per case (`PASS name` / `FAIL name: why`), then `attack: N passed, M failed`,
and exits non-zero when any case failed.
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid

EDGE = os.environ["EDGE"]
GATEWAY = os.environ["GATEWAY"]
GRPC_PRODUCT = os.environ["GRPC_PRODUCT"]
ADMIN_TOKEN = os.environ["ADMIN_TOKEN"]
BIN = os.environ["STACK_BIN"]
LOG = os.environ["STACK_LOG"]
RUN_DIR = os.environ["SHOPMESH_RUN_DIR"]
GRPCURL = os.environ.get("GRPCURL", "grpcurl")
HEADER_TIMEOUT = int(os.environ.get("HEADER_READ_TIMEOUT_MS", "10000")) / 1000
IP_BURST = int(os.environ.get("ATTACK_IP_BURST", "0"))
PASSWORD = "Analytical-Engine-1843"
RUN_ID = uuid.uuid4().hex[:8]
# A client of the gateway port that is not the trusted proxy (TRUSTED_PROXIES=127.0.0.1/32).
UNTRUSTED = "127.0.0.2"
WORK = tempfile.mkdtemp(prefix="attack-")

_next_ip = [10]


def fresh_ip():
    """A loopback source address of its own: its own rate-limit and login back-off buckets."""
    _next_ip[0] += 1
    n = _next_ip[0]
    return f"127.0.{n // 250}.{n % 250 + 1}" if n >= 250 else f"127.0.0.{n}"


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


# ---------------------------------------------------------------- HTTP


class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def text(self):
        return self.body[:300].decode("utf-8", "replace")

    def __repr__(self):
        return f"{self.status} {self.text!r}"


def request(base, method, path, *, token=None, body=None, headers=None, src=None, raw=None):
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(
        url.hostname, url.port, timeout=30, source_address=(src, 0) if src else None
    )
    all_headers = {"Connection": "close"}
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        raw = json.dumps(body).encode()
        all_headers["Content-Type"] = "application/json"
    all_headers.update(headers or {})
    conn.request(method, path, body=raw, headers=all_headers)
    response = conn.getresponse()
    reply = Reply(
        response.status,
        {k.lower(): v for k, v in response.getheaders()},
        response.read(),
    )
    conn.close()
    return reply


def edge(method, path, **kw):
    return request(EDGE, method, path, **kw)


def problem(reply, status):
    check(reply.status == status, f"expected {status}, got {reply}")
    ctype = reply.headers.get("content-type", "")
    check(ctype.startswith("application/problem+json"), f"content-type {ctype!r}: {reply}")
    check(reply.json is not None and reply.json.get("status") == status, f"problem body {reply}")
    return reply.json


def fields(body):
    return [e.get("field") for e in (body.get("errors") or [])]


def unauthorized(reply):
    problem(reply, 401)
    check("www-authenticate" in reply.headers, f"no WWW-Authenticate: {reply.headers}")


# ---------------------------------------------------------------- tokens


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_parts(token):
    header, payload, _sig = token.split(".")
    return json.loads(unb64(header)), json.loads(unb64(payload))


def ed25519_sign(key_path, data):
    path = os.path.join(WORK, "signing-input")
    with open(path, "wb") as f:
        f.write(data)
    out = subprocess.run(
        ["openssl", "pkeyutl", "-sign", "-inkey", key_path, "-rawin", "-in", path],
        capture_output=True,
    )
    if out.returncode != 0:
        raise Failure(f"openssl could not sign with {key_path}: {out.stderr.decode().strip()}")
    return out.stdout


def eddsa_jwt(key_path, header, claims):
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(ed25519_sign(key_path, signing_input.encode()))}"


def hs256_jwt(secret, header, claims):
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def random_key():
    path = os.path.join(WORK, f"random-{uuid.uuid4().hex}.pem")
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-out", path], check=True, capture_output=True
    )
    return path


def openssl_key(pem_path):
    """The Ed25519 key of a PKCS#8 PEM file as a plain (v1) PKCS#8 PEM that openssl 3.0 reads:
    the dev key file is PKCS#8 v2 (with the public key), which openssl 3.0 refuses."""
    with open(pem_path) as f:
        der = base64.b64decode("".join(l for l in f.read().splitlines() if not l.startswith("-----")))
    at = der.find(b"\x04\x22\x04\x20")
    check(at >= 0, f"{pem_path} is not an Ed25519 PKCS#8 key")
    seed = der[at + 4 : at + 36]
    v1 = bytes.fromhex("302e020100300506032b657004220420") + seed
    path = os.path.join(WORK, "user-token.v1.pem")
    with open(path, "w") as f:
        f.write("-----BEGIN PRIVATE KEY-----\n" + base64.b64encode(v1).decode() + "\n-----END PRIVATE KEY-----\n")
    return path


DEV_KEY = os.path.join(RUN_DIR, "keys", "user-token.pem")
USER_KEY = None  # set by setup()


def register(email, name="Attack Customer", src=None):
    return edge(
        "POST",
        "/api/auth/register",
        body={"email": email, "password": PASSWORD, "name": name},
        src=src,
    )


def login(email, password=PASSWORD, src=None):
    return edge("POST", "/api/auth/login", body={"email": email, "password": password}, src=src)


def customer(label):
    """(access, refresh) of a new customer account."""
    src = fresh_ip()
    email = f"{label}-{RUN_ID}@example.com"
    reply = register(email, src=src)
    check(reply.status == 201, f"register {email}: {reply}")
    reply = login(email, src=src)
    check(reply.status == 200, f"login {email}: {reply}")
    return reply.json["access_token"], reply.json["refresh_token"]


def grpcurl(*args):
    return subprocess.run(
        [GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=60
    )


# ---------------------------------------------------------------- cases

CASES = []


def case(name):
    def register_case(fn):
        CASES.append((name, fn))
        return fn

    return register_case


STATE = {}


def setup():
    access, refresh = customer("attack-customer")
    check(edge("GET", "/api/users/me", token=access, src=fresh_ip()).status == 200, "customer /me")
    STATE["customer"] = access
    header, claims = jwt_parts(access)
    STATE["header"], STATE["claims"] = header, claims
    jwks = edge("GET", "/.well-known/jwks.json", src=fresh_ip())
    check(jwks.status == 200, f"jwks: {jwks}")
    STATE["jwk"] = jwks.json["keys"][0]
    check(os.path.exists(DEV_KEY), f"no dev signing key at {DEV_KEY}")
    global USER_KEY
    USER_KEY = openssl_key(DEV_KEY)


def me(token):
    return edge("GET", "/api/users/me", token=token, src=fresh_ip())


def signed(**changes):
    claims = dict(STATE["claims"], **changes)
    return eddsa_jwt(USER_KEY, STATE["header"], claims)


@case("jwt control: the same claims re-signed with the real key are accepted (200)")
def _():
    now = int(time.time())
    reply = me(signed(iat=now, exp=now + 600))
    check(reply.status == 200, f"the re-signed control token was refused: {reply}")


@case("jwt alg none -> 401")
def _():
    claims = dict(STATE["claims"], role="admin")
    token = f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims).encode())}."
    unauthorized(me(token))
    unauthorized(edge("GET", "/api/admin/users", token=token, src=fresh_ip()))


@case("jwt HS256 signed with the public key (JWKS x, encoded and raw) -> 401")
def _():
    jwk = STATE["jwk"]
    header = {"alg": "HS256", "typ": "JWT", "kid": jwk["kid"]}
    claims = dict(STATE["claims"], role="admin")
    for secret in (jwk["x"].encode(), unb64(jwk["x"])):
        token = hs256_jwt(secret, header, claims)
        unauthorized(me(token))
        unauthorized(edge("GET", "/api/admin/users", token=token, src=fresh_ip()))


@case("jwt unknown kid (real key) -> 401")
def _():
    header = dict(STATE["header"], kid="attack-unknown-kid")
    unauthorized(me(eddsa_jwt(USER_KEY, header, STATE["claims"])))


@case("jwt real kid, signed by a random key -> 401")
def _():
    unauthorized(me(eddsa_jwt(random_key(), STATE["header"], STATE["claims"])))


@case("jwt wrong aud (real key) -> 401")
def _():
    unauthorized(me(signed(aud="someone-else")))


@case("jwt wrong iss (real key) -> 401")
def _():
    unauthorized(me(signed(iss="https://evil.example")))


@case("jwt stripped signature -> 401")
def _():
    header, payload, _sig = STATE["customer"].split(".")
    unauthorized(me(f"{header}.{payload}."))
    unauthorized(me(f"{header}.{payload}"))


@case("jwt expired two hours ago (real key) -> 401")
def _():
    now = int(time.time())
    unauthorized(me(signed(iat=now - 7200, exp=now - 7200 + 900)))


@case("jwt tampered payload (role admin, signature kept) -> 401")
def _():
    header, _payload, sig = STATE["customer"].split(".")
    claims = dict(STATE["claims"], role="admin")
    unauthorized(me(f"{header}.{b64(json.dumps(claims).encode())}.{sig}"))


@case("customer token on admin routes -> 403")
def _():
    for path in ("/api/admin/users", "/api/admin/inventory/NO-SUCH-SKU"):
        problem(edge("GET", path, token=STATE["customer"], src=fresh_ip()), 403)
    reply = edge(
        "POST",
        "/api/admin/products",
        token=STATE["customer"],
        body={"sku": "CUST-1", "name": "x", "price": {"amount": 1, "currency": "USD"}},
        src=fresh_ip(),
    )
    problem(reply, 403)


@case("no token on admin routes -> 401")
def _():
    for path in ("/api/admin/users", "/api/admin/inventory/NO-SUCH-SKU"):
        unauthorized(edge("GET", path, src=fresh_ip()))


BACKTRACE = re.compile(r"panicked|stack backtrace|RUST_BACKTRACE|\bat [\w/.-]+\.rs:\d+")


@case("search q with %00 and other control characters -> 400, no backtrace in the log")
def _():
    before = os.path.getsize(LOG)
    bad = []
    for encoded in ("a%00b", "%00", "a%01b", "a%09b", "a%0Ab", "a%0Db", "a%1Bb", "a%7Fb", "a%C2%85b"):
        reply = edge("GET", f"/api/products?q={encoded}", src=fresh_ip())
        if reply.status != 400 or not reply.headers.get("content-type", "").startswith(
            "application/problem+json"
        ):
            bad.append(f"q={encoded}: {reply}")
    reply = edge("GET", "/api/admin/users?q=a%00b", token=ADMIN_TOKEN, src=fresh_ip())
    if reply.status != 400:
        bad.append(f"admin users q=a%00b: {reply}")
    check(edge("GET", "/api/products?q=shoe", src=fresh_ip()).status == 200, "clean q not 200")
    check(not bad, "; ".join(bad))
    time.sleep(0.3)
    with open(LOG, "rb") as f:
        f.seek(before)
        grown = f.read().decode("utf-8", "replace")
    match = BACKTRACE.search(grown)
    check(match is None, f"the gateway log grew by a backtrace: {grown[max(0, match.start() - 200):match.end() + 200] if match else ''}")


def product(sku, **extra):
    body = {"sku": sku, "name": "Attack item", "price": {"amount": 500, "currency": "USD"}}
    body.update(extra)
    return edge("POST", "/api/admin/products", token=ADMIN_TOKEN, body=body, src=fresh_ip())


@case("admin product with attributes nested 60 levels -> 422 attributes")
def _():
    deep = "leaf"
    for _ in range(60):
        deep = {"n": deep}
    sku = f"ATK-DEEP-{RUN_ID}".upper()
    check(fields(problem(product(sku, attributes=deep), 422)) == ["attributes"], "fields")
    problem(edge("GET", f"/api/products/sku/{sku}", src=fresh_ip()), 404)


@case("admin product with NUL in an attribute key -> 422 attributes")
def _():
    sku = f"ATK-NUL-{RUN_ID}".upper()
    body = problem(product(sku, attributes={"k\u0000ey": "v"}), 422)
    check(fields(body) == ["attributes"], f"fields {fields(body)}")
    problem(edge("GET", f"/api/products/sku/{sku}", src=fresh_ip()), 404)


@case("admin product price 9223372036854775807 -> 422 price.amount_minor")
def _():
    sku = f"ATK-PRICE-{RUN_ID}".upper()
    body = {"sku": sku, "name": "Priced", "price": {"amount": 9223372036854775807, "currency": "USD"}}
    reply = edge("POST", "/api/admin/products", token=ADMIN_TOKEN, body=body, src=fresh_ip())
    check(fields(problem(reply, 422)) == ["price.amount_minor"], f"fields {reply}")


@case("address with country ZZ -> 422 country")
def _():
    address = {"recipient": "Ada", "line1": "1 Main St", "city": "Berlin",
               "postal_code": "10115", "country": "ZZ"}
    reply = edge("POST", "/api/users/me/addresses", token=STATE["customer"], body=address, src=fresh_ip())
    check(fields(problem(reply, 422)) == ["country"], f"fields {reply}")


@case("names with U+202E or U+200B -> 422 name")
def _():
    for i, name in enumerate(("Ad\u202ea", "Ad\u200ba")):
        reply = register(f"bidi{i}-{RUN_ID}@example.com", name=name, src=fresh_ip())
        check(fields(problem(reply, 422)) == ["name"], f"{name!r}: {reply}")
    for name in ("Ad\u202ea", "Ad\u200ba"):
        reply = edge("PATCH", "/api/users/me", token=STATE["customer"], body={"name": name}, src=fresh_ip())
        check(fields(problem(reply, 422)) == ["name"], f"PATCH name {name!r}: {reply}")


@case("X-Request-Id <script> through nginx -> a different, well-formed id")
def _():
    sent = "<script>alert(1)</script>"
    reply = edge("GET", "/healthz", headers={"X-Request-Id": sent}, src=fresh_ip())
    check(reply.status == 200, f"{reply}")
    echoed = reply.headers.get("x-request-id", "")
    check(echoed != sent, "the id was echoed")
    check(re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", echoed) is not None, f"malformed id {echoed!r}")


@case("oversized body (> 256 KiB) -> 413 problem+json")
def _():
    body = {"email": f"big-{RUN_ID}@example.com", "password": PASSWORD, "name": "x" * (300 * 1024)}
    problem(edge("POST", "/api/auth/register", body=body, src=fresh_ip()), 413)


@case("slow headers at the gateway port -> closed within HEADER_READ_TIMEOUT_MS")
def _():
    port = int(os.environ["GATEWAY_PORT"])
    slow = socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT + 5)
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: shopmesh\r\n")
    started = time.monotonic()
    answer = b""
    try:
        while True:
            chunk = slow.recv(4096)
            if not chunk:
                break
            answer += chunk
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise Failure(f"still open after {time.monotonic() - started:.1f}s")
    finally:
        slow.close()
    elapsed = time.monotonic() - started
    check(elapsed <= HEADER_TIMEOUT + 0.5, f"closed after {elapsed:.2f}s (timeout {HEADER_TIMEOUT}s)")
    check(not answer.startswith(b"HTTP/1.1 200"), f"answered an unfinished request: {answer[:80]!r}")
    prompt = request(GATEWAY, "GET", "/healthz", src=UNTRUSTED)
    check(prompt.status == 200, f"a prompt client was not served: {prompt}")


@case("spoofed X-Real-IP at the gateway port does not escape the per-IP limit")
def _():
    check(IP_BURST > 0, "ATTACK_IP_BURST not set")
    attempts = IP_BURST + 30
    statuses = []
    for i in range(attempts):
        reply = request(GATEWAY, "GET", "/api/products?q=x", src=UNTRUSTED,
                        headers={"X-Real-IP": f"198.51.100.{i % 250}", "X-Forwarded-For": f"203.0.113.{i % 250}"})
        statuses.append(reply.status)
        if reply.status == 429:
            check("retry-after" in reply.headers, f"429 without Retry-After: {reply.headers}")
    limited = statuses.count(429)
    check(limited >= 15, f"spoofed X-Real-IP values were honoured: {limited} of {attempts} limited")


@case("gRPC Reserve with a customer token -> PermissionDenied")
def _():
    out = grpcurl("-H", f"authorization: Bearer {STATE['customer']}", "-d", reserve_body(), GRPC_PRODUCT, RESERVE)
    check(out.returncode != 0 and "PermissionDenied" in out.stderr, f"rc {out.returncode}: {out.stderr.strip()} {out.stdout.strip()}")


@case("gRPC Reserve with an admin token -> PermissionDenied")
def _():
    out = grpcurl("-H", f"authorization: Bearer {ADMIN_TOKEN}", "-d", reserve_body(), GRPC_PRODUCT, RESERVE)
    check(out.returncode != 0 and "PermissionDenied" in out.stderr, f"rc {out.returncode}: {out.stderr.strip()} {out.stdout.strip()}")


@case("gRPC Reserve with no credential -> Unauthenticated")
def _():
    out = grpcurl("-d", reserve_body(), GRPC_PRODUCT, RESERVE)
    check(out.returncode != 0 and "Unauthenticated" in out.stderr, f"rc {out.returncode}: {out.stderr.strip()} {out.stdout.strip()}")


@case("gRPC Reserve with a garbage service token -> Unauthenticated")
def _():
    for garbage in ("garbage", "a.b.c", "x" * 300):
        out = grpcurl("-H", f"x-shopmesh-service-token: {garbage}", "-d", reserve_body(), GRPC_PRODUCT, RESERVE)
        check(out.returncode != 0 and "Unauthenticated" in out.stderr, f"{garbage[:10]}: rc {out.returncode}: {out.stderr.strip()}")


@case("gRPC Reserve with the order service's token re-signed by a random key -> Unauthenticated")
def _():
    header, claims = jwt_parts(service_token("order"))
    forged = eddsa_jwt(random_key(), header, claims)
    out = grpcurl("-H", f"x-shopmesh-service-token: {forged}", "-d", reserve_body(), GRPC_PRODUCT, RESERVE)
    check(out.returncode != 0 and "Unauthenticated" in out.stderr, f"rc {out.returncode}: {out.stderr.strip()}")


@case("gRPC Reserve as order (shopmesh service-token --as order) -> success")
def _():
    order_id = str(uuid.uuid4())
    out = grpcurl("-H", f"x-shopmesh-service-token: {service_token('order')}", "-d",
                  reserve_body(order_id), GRPC_PRODUCT, RESERVE)
    check(out.returncode == 0, f"rc {out.returncode}: {out.stderr.strip()}")
    answer = json.loads(out.stdout)
    check(answer.get("reservation", {}).get("orderId") == order_id, f"answer {out.stdout.strip()}")


@case("after logout the old access token -> 401")
def _():
    access, refresh = customer("attack-logout")
    check(me(access).status == 200, "fresh token refused")
    reply = edge("POST", "/api/auth/logout", body={"refresh_token": refresh}, src=fresh_ip())
    check(reply.status == 204, f"logout: {reply}")
    deadline = time.monotonic() + 3
    while True:
        reply = me(access)
        if reply.status == 401 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    unauthorized(reply)


@case("25 wrong passwords then the right one -> 429 with Retry-After")
def _():
    src = fresh_ip()
    email = f"guessed-{RUN_ID}@example.com"
    check(register(email, src=src).status == 201, "register")
    statuses = [login(email, "Wrong-Password-1", src=src).status for _ in range(25)]
    check(set(statuses) <= {401, 429}, f"wrong passwords answered {sorted(set(statuses))}")
    reply = login(email, src=src)
    problem(reply, 429)
    retry = reply.headers.get("retry-after", "")
    check(retry.isdigit() and int(retry) >= 1, f"Retry-After {retry!r}")


RESERVE = "shopmesh.product.v1.InventoryService/Reserve"
RESERVE_SKU = f"ATK-GRPC-{RUN_ID}".upper()


def reserve_body(order_id="0190a0e0-0000-7000-8000-000000000001"):
    return json.dumps({"order_id": order_id, "lines": [{"sku": RESERVE_SKU, "quantity": 1}]})


def service_token(name):
    out = subprocess.run([BIN, "service-token", "--as", name], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def setup_grpc():
    reply = edge(
        "POST", "/api/admin/products", token=ADMIN_TOKEN, src=fresh_ip(),
        body={"sku": RESERVE_SKU, "name": "Attack mug", "price": {"amount": 900, "currency": "USD"},
              "initial_stock": 10},
    )
    check(reply.status == 201, f"creating {RESERVE_SKU}: {reply}")


def main():
    passed = failed = 0
    try:
        setup()
        setup_grpc()
    except Exception as err:  # noqa: BLE001 - a broken setup fails the run, loudly
        print(f"FAIL setup: {err}", flush=True)
        print("attack: 0 passed, 1 failed")
        return 1
    for name, fn in CASES:
        try:
            fn()
        except Failure as err:
            failed += 1
            print(f"FAIL {name}: {err}", flush=True)
        except Exception as err:  # noqa: BLE001
            failed += 1
            print(f"FAIL {name}: {type(err).__name__}: {err}", flush=True)
        else:
            passed += 1
            print(f"PASS {name}", flush=True)
    print(f"attack: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
