//! User access tokens for the tests.

use std::time::Duration;

use shopmesh_platform::Settings;
use shopmesh_platform::auth::{Identity, Role, Tier};
use shopmesh_user::token::TokenSigner;
use uuid::Uuid;

/// A signed-in user: their id and access token.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: String,
    pub token: String,
}

/// Signs user access tokens as the user service would. The user service does not run in most
/// tests, so the services' verifiers are handed this signer's public key instead
/// ([`crate::TestMesh::start`] does it).
pub struct TestUsers {
    signer: TokenSigner,
}

impl TestUsers {
    /// A signer with a fresh key, for the issuer and audience of `settings`.
    pub fn new(settings: &Settings) -> Self {
        let signer = TokenSigner::from_key(
            &ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
            &settings.jwt,
            Duration::from_secs(900),
        )
        .expect("token signer");
        Self { signer }
    }

    pub fn signer(&self) -> &TokenSigner {
        &self.signer
    }

    /// The token of `user_id` in `role` (standard tier).
    pub fn token(&self, user_id: &str, role: Role) -> String {
        self.signer
            .sign(&Identity {
                user_id: user_id.to_owned(),
                role,
                tier: Tier::Standard,
            })
            .expect("token")
    }

    /// The token of a new admin.
    pub fn admin_token(&self) -> String {
        self.token(&Uuid::now_v7().to_string(), Role::Admin)
    }

    /// The token of the customer `user_id`.
    pub fn customer_token(&self, user_id: &str) -> String {
        self.token(user_id, Role::Customer)
    }

    /// A new admin.
    pub fn admin(&self) -> TestUser {
        self.user(Role::Admin)
    }

    /// A new customer.
    pub fn customer(&self) -> TestUser {
        self.user(Role::Customer)
    }

    fn user(&self, role: Role) -> TestUser {
        let id = Uuid::now_v7().to_string();
        TestUser {
            token: self.token(&id, role),
            id,
        }
    }
}
