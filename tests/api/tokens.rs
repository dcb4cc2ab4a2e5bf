use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use shopmesh_platform::auth::{Identity, Role, Tier};

use crate::helpers::spawn_app;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn expired_tampered_unsigned_and_hs256_tokens_are_refused() {
    let app = spawn_app().await;
    let valid = app.customer("mallory@example.com").await;
    let me = app.get("/api/users/me", Some(&valid)).await;
    assert_eq!(me.status, 200);
    let user_id = me.body["id"].as_str().unwrap().to_owned();

    // Expired: signed with the real key, issued two hours ago.
    let signer = app.token_signer();
    let identity = Identity {
        user_id: user_id.clone(),
        role: Role::Admin,
        tier: Tier::Vip,
    };
    let expired = signer.sign_issued_at(&identity, now() - 7200).unwrap();
    // The same key with a current time works, so only expiry is at stake.
    let fresh = signer.sign(&identity).unwrap();
    assert_eq!(app.get("/api/users/me", Some(&fresh)).await.status, 200);

    // Tampered: payload changed to claim the admin role, signature kept.
    let parts: Vec<&str> = valid.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["role"] = json!("admin");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );

    // alg: none, no signature.
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!(
        "{none_header}.{}.",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
    );

    // HS256 "signed" with the public key (the classic key-confusion attack), with the right kid.
    let jwks = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(jwks.status, 200);
    let key = &jwks.body["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["alg"], "EdDSA");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = key["kid"].as_str().map(str::to_owned);
    let hs_claims = json!({
        "sub": user_id, "role": "admin", "tier": "vip", "iss": "shopmesh", "aud": "shopmesh",
        "iat": now(), "exp": now() + 600, "jti": "x"
    });
    let public_x = key["x"].as_str().unwrap();
    let hs_with_encoded = jsonwebtoken::encode(
        &header,
        &hs_claims,
        &EncodingKey::from_secret(public_x.as_bytes()),
    )
    .unwrap();
    let hs_with_raw = jsonwebtoken::encode(
        &header,
        &hs_claims,
        &EncodingKey::from_secret(&URL_SAFE_NO_PAD.decode(public_x).unwrap()),
    )
    .unwrap();

    for (name, token) in [
        ("expired", expired.as_str()),
        ("tampered", tampered.as_str()),
        ("alg none", unsigned.as_str()),
        ("hs256 with encoded public key", hs_with_encoded.as_str()),
        ("hs256 with raw public key", hs_with_raw.as_str()),
        ("garbage", "not.a.token"),
    ] {
        let reply = app.get("/api/users/me", Some(token)).await;
        assert_eq!(reply.status, 401, "{name}: {}", reply.text);
        reply.assert_problem(401);
        assert!(
            reply.headers.get("www-authenticate").is_some(),
            "{name}: WWW-Authenticate"
        );
        // Admin routes refuse them the same way (never 403 or 200).
        let admin = app.get("/api/admin/users", Some(token)).await;
        assert_eq!(admin.status, 401, "{name} on admin route");
    }

    // The user service verifies tokens itself too: a forged token sent straight over gRPC fails.
    let mut client = shopmesh_contracts::user::user_service_client::UserServiceClient::connect(
        app.user_grpc.clone(),
    )
    .await
    .unwrap();
    let mut request = tonic::Request::new(shopmesh_contracts::user::GetMeRequest {});
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {hs_with_encoded}").parse().unwrap(),
    );
    let status = client.get_me(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let status = client
        .get_me(tonic::Request::new(
            shopmesh_contracts::user::GetMeRequest {},
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn malformed_refresh_tokens_are_401_not_500() {
    let app = spawn_app().await;
    for token in ["", "abc", "0123.456", &"f".repeat(500)] {
        let reply = app
            .post("/api/auth/refresh", json!({"refresh_token": token}), None)
            .await;
        reply.assert_problem(401);
    }
    let logout = app
        .post(
            "/api/auth/logout",
            json!({"refresh_token": "nonsense"}),
            None,
        )
        .await;
    assert_eq!(logout.status, 204);
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .unwrap()
        .kid
        .expect("kid")
}

#[tokio::test]
async fn a_rotated_signing_key_signs_new_tokens_while_old_ones_still_verify() {
    let app = spawn_app().await;
    let admin = app.admin("rotate-admin@example.com").await;
    let old = app.customer("rotate@example.com").await;

    // Rotate as an operator would, against this installation's key files.
    let rotated = tokio::process::Command::new(env!("CARGO_BIN_EXE_shopmesh"))
        .args(["admin", "rotate-signing-key"])
        .env_clear()
        .env("SHOPMESH_RUN_DIR", app.env.raw("SHOPMESH_RUN_DIR").unwrap())
        .output()
        .await
        .unwrap();
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert!(String::from_utf8_lossy(&rotated.stdout).contains("now signed with key"));

    // The running user service picks the new key up within seconds, without a restart.
    let mut new = None;
    for _ in 0..50 {
        let (token, _) = app.login("rotate@example.com").await;
        if kid(&token) != kid(&old) {
            new = Some(token);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let new = new.expect("new tokens are signed with the new key");

    // The first token of the new key verifies at once (the edge fetches the keys again), and
    // the old key's tokens keep working until they expire.
    assert_eq!(app.get("/api/users/me", Some(&new)).await.status, 200);
    assert_eq!(app.get("/api/users/me", Some(&old)).await.status, 200);
    let jwks = app.get("/.well-known/jwks.json", None).await;
    let kids: Vec<&str> = jwks.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert!(kids.contains(&kid(&new).as_str()) && kids.contains(&kid(&old).as_str()));
    // Admin tokens signed before the rotation still reach the services behind the gateway.
    let category = app
        .post(
            "/api/admin/categories",
            json!({"name": "Rotated", "slug": "rotated"}),
            Some(&admin),
        )
        .await;
    assert_eq!(category.status, 201, "{}", category.text);
}
