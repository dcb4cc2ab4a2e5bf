//! Use cases of the user service, written against the storage ports.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use shopmesh_platform::auth::{Identity, Jwk, LEEWAY_SECS, Role, Session, Tier};
use shopmesh_platform::revocation::{RevocationCheck, RevocationError};
use shopmesh_platform::{cursor, page};

use crate::token::SigningKeys;
use shopmesh_platform::problem::FieldError;

use crate::domain::{
    self, Address, AddressDraft, AddressFields, Email, MAX_ADDRESSES, Password, User,
    settle_default,
};
use crate::error::Error;
use crate::events::{self, PendingEvent};
use crate::password;
use crate::repo::{RefreshTokens, RepoError, Rotation, UserRepo, token_family};
use crate::throttle::{Attempt, LoginThrottle};

/// How often an address change retries after losing a race with another change.
const ADDRESS_RETRIES: usize = 5;
/// How often a profile or access change retries after losing a race with another change.
const ACCOUNT_RETRIES: usize = 5;

/// A new access token and its refresh token.
#[derive(Clone, Debug)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

/// Changes to a profile; `None` keeps a field.
#[derive(Clone, Debug, Default)]
pub struct ProfilePatch {
    pub name: Option<String>,
    pub phone: Option<String>,
}

/// Changes to an address; `None` keeps a field. `is_default: Some(true)` moves the default here.
#[derive(Clone, Debug, Default)]
pub struct AddressPatch {
    pub label: Option<String>,
    pub recipient: Option<String>,
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
    pub phone: Option<String>,
    pub is_default: Option<bool>,
}

/// One page of accounts.
#[derive(Clone, Debug)]
pub struct UserPage {
    pub users: Vec<User>,
    pub next_cursor: Option<String>,
}

pub struct UserService {
    users: Arc<dyn UserRepo>,
    refresh_tokens: Arc<dyn RefreshTokens>,
    keys: SigningKeys,
    throttle: Arc<dyn LoginThrottle>,
    /// Ended sessions and token versions: written here, checked on every authenticated call.
    sessions: Arc<RevocationCheck>,
}

impl UserService {
    /// The account store, whose user documents carry the events not yet published.
    pub fn outbox(&self) -> Arc<dyn UserRepo> {
        self.users.clone()
    }
}

fn revocation_store(err: RevocationError) -> Error {
    Error::Internal(anyhow::Error::new(err))
}

/// A real hash to verify against when the email is unknown, so that answer takes as long as a
/// wrong password does (made on first use, in a hashing slot like every Argon2 call).
async fn decoy_hash() -> Result<String, Error> {
    static DECOY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DECOY
        .get_or_try_init(|| password::hash("decoy-password-never-matches".to_owned()))
        .await
        .cloned()
}

/// The current time at the millisecond precision MongoDB stores, so a freshly created record
/// reads back exactly as it was returned.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_default()
}

fn identity(user: &User) -> Identity {
    Identity {
        user_id: user.id.clone(),
        role: user.role,
        tier: user.tier,
    }
}

/// The account id a list cursor continues after: the token of exactly one part, a UUID.
fn decode_cursor(token: &str) -> Result<String, Error> {
    let malformed = || Error::BadArgument("malformed cursor");
    let id = cursor::decode(token, 1)
        .and_then(|mut parts| parts.pop())
        .ok_or_else(malformed)?;
    uuid::Uuid::parse_str(&id).map_err(|_| malformed())?;
    Ok(id)
}

fn encode_cursor(id: &str) -> String {
    cursor::encode(&[id])
}

impl UserService {
    pub fn new(
        users: Arc<dyn UserRepo>,
        refresh_tokens: Arc<dyn RefreshTokens>,
        keys: SigningKeys,
        throttle: Arc<dyn LoginThrottle>,
        sessions: Arc<RevocationCheck>,
    ) -> Self {
        Self {
            users,
            refresh_tokens,
            keys,
            throttle,
            sessions,
        }
    }

    /// The revocation check for callers of this service.
    pub fn sessions(&self) -> &RevocationCheck {
        &self.sessions
    }

    /// How long an ended session must be remembered: until every access token of it expired.
    fn session_memory(&self) -> std::time::Duration {
        self.keys.ttl() + std::time::Duration::from_secs(LEEWAY_SECS)
    }

    /// The keys that verify this service's tokens (the current one, and the previous one
    /// after a rotation).
    pub fn jwks(&self) -> Vec<Jwk> {
        self.keys.jwks()
    }

    /// The signing keys, for the reload after a rotation.
    pub fn keys(&self) -> &SigningKeys {
        &self.keys
    }

    /// Checks both stores answer.
    pub async fn ready(&self) -> anyhow::Result<()> {
        self.users.ping().await.map_err(anyhow::Error::from)?;
        self.refresh_tokens.ping().await
    }

    /// Creates an account, recording user.registered with `correlation_id` (the request id of
    /// the call; empty when there is none) in the same insert.
    #[tracing::instrument(skip_all)]
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        name: &str,
        role: Role,
        correlation_id: &str,
    ) -> Result<User, Error> {
        let (email, password, name) = {
            let email = Email::parse(email);
            let password = Password::parse(password);
            let name = domain::required_text("name", name, 100);
            match (email, password, name) {
                (Ok(e), Ok(p), Ok(n)) => (e, p, n),
                (e, p, n) => {
                    let errors = [e.err(), p.err(), n.err()].into_iter().flatten().collect();
                    return Err(Error::Invalid(errors));
                }
            }
        };
        let plain = password.expose().to_owned();
        let password_hash = password::hash(plain).await?;
        let now = now();
        let user = User {
            id: uuid::Uuid::now_v7().to_string(),
            email: email.as_str().to_owned(),
            email_normalized: email.normalized().to_owned(),
            password_hash,
            name,
            phone: String::new(),
            role,
            tier: Tier::Standard,
            addresses: Vec::new(),
            version: 0,
            created_at: now,
            updated_at: now,
        };
        let event = PendingEvent::registered(&user, correlation_id, now);
        self.users.insert(&user, &event).await?;
        tracing::info!(user_id = %user.id, "account registered");
        Ok(user)
    }

    /// Creates an admin account, or promotes the existing account with this email to admin.
    /// Returns the account and whether it was created.
    pub async fn ensure_admin(&self, email: &str, password: &str) -> Result<(User, bool), Error> {
        // An operator's command, not a request: no correlation id.
        match self
            .register(email, password, "Administrator", Role::Admin, "")
            .await
        {
            Ok(user) => Ok((user, true)),
            Err(Error::EmailTaken) => {
                let existing = self
                    .users
                    .by_email(&domain::normalize_email(email))
                    .await?
                    .ok_or(Error::NotFound("account"))?;
                let (before, user) = self
                    .change_account(&existing.id, "", |user| user.role = Role::Admin)
                    .await?;
                self.access_changed(&before, &user).await?;
                Ok((user, false))
            }
            Err(err) => Err(err),
        }
    }

    /// Checks a password, behind the login throttle: `client_ip` is the address the gateway saw
    /// (`None` when the caller is not the gateway), so guesses are limited per account and per
    /// client.
    #[tracing::instrument(skip_all)]
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<Tokens, Error> {
        let account = domain::normalize_email(email);
        // Counted before the password is checked, for unknown emails too: the throttle must
        // neither leak which accounts exist nor let parallel guesses in ahead of the count.
        if let Attempt::Wait(wait) = self.throttle.attempt(&account, client_ip).await? {
            let secs = wait.as_millis().div_ceil(1000).max(1);
            return Err(Error::LoginThrottled(
                u64::try_from(secs).unwrap_or(u64::MAX),
            ));
        }
        let found = self.users.by_email(&account).await?;
        let hash = match &found {
            Some(user) => user.password_hash.clone(),
            None => decoy_hash().await?,
        };
        let matches = password::verify(password.to_owned(), hash).await?;
        let user = match found {
            Some(user) if matches => user,
            _ => return Err(Error::BadCredentials),
        };
        self.throttle.succeeded(&account, client_ip).await?;
        let refresh_token = self.refresh_tokens.issue(&user.id).await?;
        self.tokens(&user, refresh_token).await
    }

    async fn tokens(&self, user: &User, refresh_token: String) -> Result<Tokens, Error> {
        self.tokens_for(&user.id, refresh_token).await
    }

    /// An access token for the account's session of `refresh_token` (its family is the `sid`),
    /// with the role and tier the account has now.
    async fn tokens_for(&self, user_id: &str, refresh_token: String) -> Result<Tokens, Error> {
        let session_id = token_family(&refresh_token)
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("refresh token format")))?;
        // The version is read before the account: an access change writes the account first and
        // bumps the version after, so a token signed with a role read before the change always
        // carries the old version and is refused.
        let version = self
            .sessions
            .token_version(user_id)
            .await
            .map_err(revocation_store)?;
        let user = self
            .users
            .by_id(user_id)
            .await?
            .ok_or(Error::InvalidRefreshToken)?;
        let session = Session {
            id: session_id,
            version,
        };
        let signer = self
            .keys
            .current()
            .map_err(|err| Error::Internal(anyhow::anyhow!("signing key: {err}")))?;
        let access_token = signer
            .sign_session(&identity(&user), &session)
            .map_err(|err| Error::Internal(anyhow::anyhow!("signing: {err}")))?;
        Ok(Tokens {
            access_token,
            refresh_token,
            expires_in: signer.ttl().as_secs(),
        })
    }

    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, Error> {
        match self.refresh_tokens.rotate(refresh_token).await? {
            // The role and tier come from the account as it is now, not as it was at login.
            Rotation::Rotated { user_id, token } => self.tokens_for(&user_id, token).await,
            Rotation::Reused => {
                tracing::warn!("rotated refresh token presented again; family revoked");
                // Whoever holds the family's access tokens (perhaps the thief) loses them too.
                if let Some(session_id) = token_family(refresh_token) {
                    self.sessions
                        .end_session(&session_id, self.session_memory())
                        .await
                        .map_err(revocation_store)?;
                }
                Err(Error::InvalidRefreshToken)
            }
            Rotation::Invalid => Err(Error::InvalidRefreshToken),
        }
    }

    /// Ends the session of `refresh_token`: the family cannot be refreshed any more and its
    /// access tokens are refused from now on. Only a token of the family may end it, so knowing
    /// a session id (it is readable in an access token) is not enough.
    pub async fn logout(&self, refresh_token: &str) -> Result<(), Error> {
        if self.refresh_tokens.revoke(refresh_token).await?
            && let Some(session_id) = token_family(refresh_token)
        {
            self.sessions
                .end_session(&session_id, self.session_memory())
                .await
                .map_err(revocation_store)?;
        }
        Ok(())
    }

    pub async fn get(&self, user_id: &str) -> Result<User, Error> {
        if uuid::Uuid::parse_str(user_id).is_err() {
            return Err(Error::NotFound("account"));
        }
        self.users
            .by_id(user_id)
            .await?
            .ok_or(Error::NotFound("account"))
    }

    /// Applies the patch; a change records user.updated with `correlation_id`, a patch that
    /// changes nothing writes nothing.
    pub async fn update_profile(
        &self,
        user_id: &str,
        patch: ProfilePatch,
        correlation_id: &str,
    ) -> Result<User, Error> {
        let name = patch
            .name
            .as_deref()
            .map(|name| domain::required_text("name", name, 100));
        let phone = patch
            .phone
            .as_deref()
            .map(|phone| domain::phone("phone", phone));
        let errors: Vec<FieldError> = [
            name.clone().and_then(Result::err),
            phone.clone().and_then(Result::err),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let name = name.transpose().ok().flatten();
        let phone = phone.transpose().ok().flatten();
        if name.is_none() && phone.is_none() {
            return self.get(user_id).await;
        }
        let (_, user) = self
            .change_account(user_id, correlation_id, |user| {
                if let Some(name) = &name {
                    user.name.clone_from(name);
                }
                if let Some(phone) = &phone {
                    user.phone.clone_from(phone);
                }
            })
            .await?;
        Ok(user)
    }

    /// Applies `change` to the account's profile or access with a compare-and-set on the
    /// account version, recording user.updated (the whole new state, with `correlation_id`) in
    /// the same update, and retrying when another change won the race. A change that changes
    /// nothing writes nothing. Returns the account before and after.
    async fn change_account(
        &self,
        user_id: &str,
        correlation_id: &str,
        change: impl Fn(&mut User),
    ) -> Result<(User, User), Error> {
        for _ in 0..ACCOUNT_RETRIES {
            let before = self.get(user_id).await?;
            let mut after = before.clone();
            change(&mut after);
            if !events::changed(&before, &after) {
                return Ok((before.clone(), before));
            }
            let now = now();
            after.version = before.version + 1;
            after.updated_at = now;
            let event = PendingEvent::updated(&after, correlation_id, now);
            if let Some(updated) = self
                .users
                .update_account(&after, before.version, &event)
                .await?
            {
                return Ok((before, updated));
            }
        }
        Err(Error::Conflict)
    }

    /// Applies `change` to the caller's address list with a compare-and-set on the account
    /// version, retrying when another change won the race.
    async fn change_addresses<T>(
        &self,
        user_id: &str,
        change: impl Fn(&mut Vec<Address>) -> Result<T, Error>,
    ) -> Result<(User, T), Error> {
        for _ in 0..ADDRESS_RETRIES {
            let user = self.get(user_id).await?;
            let mut addresses = user.addresses.clone();
            let outcome = change(&mut addresses)?;
            match self
                .users
                .replace_addresses(user_id, user.version, &addresses, now())
                .await
            {
                Ok(Some(updated)) => return Ok((updated, outcome)),
                Ok(None) => continue,
                Err(RepoError::Duplicate) => return Err(Error::Conflict),
                Err(err) => return Err(err.into()),
            }
        }
        Err(Error::Conflict)
    }

    pub async fn list_addresses(&self, user_id: &str) -> Result<Vec<Address>, Error> {
        let mut addresses = self.get(user_id).await?.addresses;
        addresses.sort_by(|a, b| {
            b.is_default
                .cmp(&a.is_default)
                .then(a.created_at.cmp(&b.created_at))
        });
        Ok(addresses)
    }

    pub async fn create_address(
        &self,
        user_id: &str,
        draft: AddressDraft,
        make_default: bool,
    ) -> Result<Address, Error> {
        let fields = AddressFields::parse(&draft).map_err(Error::Invalid)?;
        let id = uuid::Uuid::now_v7().to_string();
        let created_at = now();
        let (user, ()) = self
            .change_addresses(user_id, |addresses| {
                if addresses.len() >= MAX_ADDRESSES {
                    return Err(Error::TooManyAddresses(MAX_ADDRESSES));
                }
                addresses.push(Address {
                    id: id.clone(),
                    fields: fields.clone(),
                    is_default: false,
                    created_at,
                });
                settle_default(addresses, make_default.then_some(id.as_str()));
                Ok(())
            })
            .await?;
        user.addresses
            .into_iter()
            .find(|a| a.id == id)
            .ok_or(Error::Conflict)
    }

    pub async fn update_address(
        &self,
        user_id: &str,
        address_id: &str,
        patch: AddressPatch,
    ) -> Result<Address, Error> {
        let (user, ()) = self
            .change_addresses(user_id, |addresses| {
                let address = addresses
                    .iter_mut()
                    .find(|a| a.id == address_id)
                    .ok_or(Error::NotFound("address"))?;
                let mut draft = address.fields.to_draft();
                let set = |target: &mut String, value: &Option<String>| {
                    if let Some(value) = value {
                        target.clone_from(value);
                    }
                };
                set(&mut draft.label, &patch.label);
                set(&mut draft.recipient, &patch.recipient);
                set(&mut draft.line1, &patch.line1);
                set(&mut draft.line2, &patch.line2);
                set(&mut draft.city, &patch.city);
                set(&mut draft.region, &patch.region);
                set(&mut draft.postal_code, &patch.postal_code);
                set(&mut draft.country, &patch.country);
                set(&mut draft.phone, &patch.phone);
                address.fields = AddressFields::parse(&draft).map_err(Error::Invalid)?;
                if patch.is_default == Some(true) {
                    settle_default(addresses, Some(address_id));
                } else if patch.is_default == Some(false) && addresses.len() > 1 {
                    // Giving up the default hands it to the oldest other address.
                    for a in addresses.iter_mut() {
                        a.is_default = false;
                    }
                    let other = addresses
                        .iter()
                        .filter(|a| a.id != address_id)
                        .min_by_key(|a| (a.created_at, a.id.clone()))
                        .map(|a| a.id.clone());
                    settle_default(addresses, other.as_deref());
                }
                Ok(())
            })
            .await?;
        user.addresses
            .into_iter()
            .find(|a| a.id == address_id)
            .ok_or(Error::NotFound("address"))
    }

    pub async fn delete_address(&self, user_id: &str, address_id: &str) -> Result<(), Error> {
        self.change_addresses(user_id, |addresses| {
            let before = addresses.len();
            addresses.retain(|a| a.id != address_id);
            if addresses.len() == before {
                return Err(Error::NotFound("address"));
            }
            settle_default(addresses, None);
            Ok(())
        })
        .await?;
        Ok(())
    }

    pub async fn list(
        &self,
        page_size: i32,
        cursor: Option<&str>,
        email_contains: Option<&str>,
    ) -> Result<UserPage, Error> {
        let limit = page::page_size(page_size)
            .ok_or(Error::BadArgument("page size must be between 1 and 100"))?;
        let after = cursor
            .filter(|c| !c.is_empty())
            .map(decode_cursor)
            .transpose()?;
        let search = email_contains.map(str::trim).filter(|t| !t.is_empty());
        if search.is_some_and(|t| t.chars().count() > 254) {
            return Err(Error::BadArgument("search text is too long"));
        }
        let mut users = self.users.list(after.as_deref(), search, limit + 1).await?;
        let next_cursor = if users.len() > limit {
            users.truncate(limit);
            users.last().map(|u| encode_cursor(&u.id))
        } else {
            None
        };
        Ok(UserPage { users, next_cursor })
    }

    /// Sets the role and/or tier; a change records user.updated with `correlation_id`, one that
    /// changes nothing writes nothing.
    pub async fn update_access(
        &self,
        user_id: &str,
        role: Option<Role>,
        tier: Option<Tier>,
        correlation_id: &str,
    ) -> Result<User, Error> {
        if role.is_none() && tier.is_none() {
            return self.get(user_id).await;
        }
        let (before, after) = self
            .change_account(user_id, correlation_id, |user| {
                if let Some(role) = role {
                    user.role = role;
                }
                if let Some(tier) = tier {
                    user.tier = tier;
                }
            })
            .await?;
        self.access_changed(&before, &after).await?;
        Ok(after)
    }

    /// Refuses the account's existing access tokens when its role or tier changed: they carry
    /// the old ones. Called after the account is written (see [`UserService::tokens_for`]).
    async fn access_changed(&self, before: &User, after: &User) -> Result<(), Error> {
        if before.role != after.role || before.tier != after.tier {
            let version = self
                .sessions
                .bump_token_version(&after.id)
                .await
                .map_err(revocation_store)?;
            tracing::info!(user_id = %after.id, version, "account access changed; older access tokens refused");
        }
        Ok(())
    }
}
