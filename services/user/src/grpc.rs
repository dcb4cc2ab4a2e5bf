//! The gRPC face of the user service: converts protobuf messages to domain calls and back.

use std::sync::Arc;

use shopmesh_contracts::user::user_service_server::UserService as UserServiceApi;
use shopmesh_contracts::user::{self as pb};
use shopmesh_platform::auth::{Identity, Role, Tier, TokenVerifier, bearer_token};
use shopmesh_platform::grpc::{REQUEST_ID, calling_service, identity};
use shopmesh_platform::revocation::Verdict;
use shopmesh_platform::text::has_control;
use shopmesh_platform::time::timestamp;
use tonic::{Request, Response, Status};

use crate::domain::{Address, AddressDraft, User};
use crate::service::{AddressPatch, ProfilePatch, Tokens, UserService};

/// Metadata in which the gateway names the client address it saw.
pub const CLIENT_IP: &str = "x-client-ip";

/// Implements `shopmesh.user.v1.UserService`.
#[derive(Clone)]
pub struct UserGrpc {
    service: Arc<UserService>,
    /// The guard's verifier, to read the session of a token the guard has already verified.
    verifier: TokenVerifier,
}

impl UserGrpc {
    pub fn new(service: Arc<UserService>, verifier: TokenVerifier) -> Self {
        Self { service, verifier }
    }

    /// The verified caller whose session is still active: UNAUTHENTICATED without a token or
    /// when the session ended or the account's access changed since the token was signed;
    /// UNAVAILABLE when that cannot be checked (fail closed, see `platform::revocation`).
    async fn caller<T>(&self, request: &Request<T>) -> Result<Identity, Status> {
        let caller = identity(request)?;
        let refused = || Status::unauthenticated("invalid access token");
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token)
            .ok_or_else(refused)?;
        let (verified, session) = self.verifier.verify_session(token).map_err(|_| refused())?;
        if verified != caller {
            return Err(refused());
        }
        match self.service.sessions().check(&caller, &session).await {
            Ok(Verdict::Active) => Ok(caller),
            Ok(Verdict::SessionEnded | Verdict::Stale) => Err(Status::unauthenticated(
                "the session has ended, log in again",
            )),
            Err(err) => {
                tracing::error!(error = %err, "could not check the session");
                Err(Status::unavailable("session check unavailable, try again"))
            }
        }
    }

    /// [`UserGrpc::caller`] if it is an admin, PERMISSION_DENIED for anyone else.
    async fn admin<T>(&self, request: &Request<T>) -> Result<Identity, Status> {
        let caller = self.caller(request).await?;
        if caller.is_admin() {
            Ok(caller)
        } else {
            Err(Status::permission_denied("admin role required"))
        }
    }
}

/// The request id of the call, the correlation id of the events it causes; empty when none.
fn correlation_id<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

pub fn role_pb(role: Role) -> pb::Role {
    match role {
        Role::Customer => pb::Role::Customer,
        Role::Admin => pb::Role::Admin,
    }
}

pub fn tier_pb(tier: Tier) -> pb::Tier {
    match tier {
        Tier::Standard => pb::Tier::Standard,
        Tier::Vip => pb::Tier::Vip,
    }
}

fn address_pb(address: &Address) -> pb::Address {
    let f = &address.fields;
    pb::Address {
        id: address.id.clone(),
        label: f.label.clone(),
        recipient: f.recipient.clone(),
        line1: f.line1.clone(),
        line2: f.line2.clone(),
        city: f.city.clone(),
        region: f.region.clone(),
        postal_code: f.postal_code.clone(),
        country: f.country.clone(),
        phone: f.phone.clone(),
        is_default: address.is_default,
        create_time: Some(timestamp(address.created_at)),
    }
}

fn user_pb(user: &User) -> pb::User {
    pb::User {
        id: user.id.clone(),
        email: user.email.clone(),
        name: user.name.clone(),
        phone: user.phone.clone(),
        role: role_pb(user.role).into(),
        tier: tier_pb(user.tier).into(),
        addresses: user.addresses.iter().map(address_pb).collect(),
        create_time: Some(timestamp(user.created_at)),
        update_time: Some(timestamp(user.updated_at)),
    }
}

fn tokens_pb(tokens: Tokens) -> pb::TokenPair {
    pb::TokenPair {
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        token_type: "Bearer".into(),
        expires_in: i64::try_from(tokens.expires_in).unwrap_or(i64::MAX),
    }
}

fn draft(input: pb::AddressInput) -> AddressDraft {
    AddressDraft {
        label: input.label,
        recipient: input.recipient,
        line1: input.line1,
        line2: input.line2,
        city: input.city,
        region: input.region,
        postal_code: input.postal_code,
        country: input.country,
        phone: input.phone,
    }
}

fn masked(mask: &Option<prost_types::FieldMask>, name: &str) -> bool {
    mask.as_ref()
        .is_some_and(|m| m.paths.iter().any(|p| p == name))
}

fn check_mask(mask: &Option<prost_types::FieldMask>, allowed: &[&str]) -> Result<(), Status> {
    match mask
        .iter()
        .flat_map(|m| m.paths.iter())
        .find(|p| !allowed.contains(&p.as_str()))
    {
        Some(unknown) => Err(Status::invalid_argument(format!(
            "update_mask names an unknown field: {unknown}"
        ))),
        None => Ok(()),
    }
}

#[tonic::async_trait]
impl UserServiceApi for UserGrpc {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let correlation_id = correlation_id(&request);
        let req = request.into_inner();
        let user = self
            .service
            .register(
                &req.email,
                &req.password,
                &req.name,
                Role::Customer,
                &correlation_id,
            )
            .await?;
        Ok(Response::new(pb::RegisterResponse {
            user: Some(user_pb(&user)),
        }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        // Only the gateway may name the client; from anyone else the header is ignored.
        let client_ip = calling_service(&request)
            .filter(|service| service.name == "gateway")
            .and_then(|_| {
                request
                    .metadata()
                    .get(CLIENT_IP)?
                    .to_str()
                    .ok()?
                    .parse()
                    .ok()
            });
        let req = request.into_inner();
        let tokens = self
            .service
            .login(&req.email, &req.password, client_ip)
            .await?;
        Ok(Response::new(pb::LoginResponse {
            tokens: Some(tokens_pb(tokens)),
        }))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        let tokens = self
            .service
            .refresh(&request.into_inner().refresh_token)
            .await?;
        Ok(Response::new(pb::RefreshResponse {
            tokens: Some(tokens_pb(tokens)),
        }))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        self.service
            .logout(&request.into_inner().refresh_token)
            .await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        let keys = self
            .service
            .jwks()
            .into_iter()
            .map(|k| pb::Jwk {
                kty: k.kty,
                crv: k.crv,
                x: k.x,
                kid: k.kid,
                alg: k.alg,
                r#use: k.use_,
            })
            .collect();
        Ok(Response::new(pb::GetJwksResponse { keys }))
    }

    async fn get_me(
        &self,
        request: Request<pb::GetMeRequest>,
    ) -> Result<Response<pb::GetMeResponse>, Status> {
        let caller = self.caller(&request).await?;
        let user = self.service.get(&caller.user_id).await?;
        Ok(Response::new(pb::GetMeResponse {
            user: Some(user_pb(&user)),
        }))
    }

    async fn update_me(
        &self,
        request: Request<pb::UpdateMeRequest>,
    ) -> Result<Response<pb::UpdateMeResponse>, Status> {
        let caller = self.caller(&request).await?;
        let correlation_id = correlation_id(&request);
        let req = request.into_inner();
        check_mask(&req.update_mask, &["name", "phone"])?;
        let patch = ProfilePatch {
            name: masked(&req.update_mask, "name").then_some(req.name),
            phone: masked(&req.update_mask, "phone").then_some(req.phone),
        };
        let user = self
            .service
            .update_profile(&caller.user_id, patch, &correlation_id)
            .await?;
        Ok(Response::new(pb::UpdateMeResponse {
            user: Some(user_pb(&user)),
        }))
    }

    async fn list_addresses(
        &self,
        request: Request<pb::ListAddressesRequest>,
    ) -> Result<Response<pb::ListAddressesResponse>, Status> {
        let caller = self.caller(&request).await?;
        let addresses = self.service.list_addresses(&caller.user_id).await?;
        Ok(Response::new(pb::ListAddressesResponse {
            addresses: addresses.iter().map(address_pb).collect(),
        }))
    }

    async fn create_address(
        &self,
        request: Request<pb::CreateAddressRequest>,
    ) -> Result<Response<pb::CreateAddressResponse>, Status> {
        let caller = self.caller(&request).await?;
        let input = request
            .into_inner()
            .address
            .ok_or_else(|| Status::invalid_argument("address is required"))?;
        let make_default = input.is_default;
        let address = self
            .service
            .create_address(&caller.user_id, draft(input), make_default)
            .await?;
        Ok(Response::new(pb::CreateAddressResponse {
            address: Some(address_pb(&address)),
        }))
    }

    async fn update_address(
        &self,
        request: Request<pb::UpdateAddressRequest>,
    ) -> Result<Response<pb::UpdateAddressResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let fields = [
            "label",
            "recipient",
            "line1",
            "line2",
            "city",
            "region",
            "postal_code",
            "country",
            "phone",
            "is_default",
        ];
        check_mask(&req.update_mask, &fields)?;
        let input = req.address.unwrap_or_default();
        let mask = &req.update_mask;
        let pick = |name: &str, value: String| masked(mask, name).then_some(value);
        let patch = AddressPatch {
            label: pick("label", input.label),
            recipient: pick("recipient", input.recipient),
            line1: pick("line1", input.line1),
            line2: pick("line2", input.line2),
            city: pick("city", input.city),
            region: pick("region", input.region),
            postal_code: pick("postal_code", input.postal_code),
            country: pick("country", input.country),
            phone: pick("phone", input.phone),
            is_default: masked(mask, "is_default").then_some(input.is_default),
        };
        let address = self
            .service
            .update_address(&caller.user_id, &req.address_id, patch)
            .await?;
        Ok(Response::new(pb::UpdateAddressResponse {
            address: Some(address_pb(&address)),
        }))
    }

    async fn delete_address(
        &self,
        request: Request<pb::DeleteAddressRequest>,
    ) -> Result<Response<pb::DeleteAddressResponse>, Status> {
        let caller = self.caller(&request).await?;
        self.service
            .delete_address(&caller.user_id, &request.into_inner().address_id)
            .await?;
        Ok(Response::new(pb::DeleteAddressResponse {}))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        self.admin(&request).await?;
        let user = self.service.get(&request.into_inner().user_id).await?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user_pb(&user)),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.admin(&request).await?;
        let req = request.into_inner();
        // The search text reaches MongoDB: one line of printable text only (a NUL or escape is a
        // client mistake, answered like the other bad search values).
        if has_control(&req.email_contains) {
            return Err(Status::invalid_argument(
                "search text q must not contain control characters",
            ));
        }
        let page = self
            .service
            .list(
                req.page_size,
                Some(&req.page_token),
                Some(&req.email_contains),
            )
            .await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: page.users.iter().map(user_pb).collect(),
            next_page_token: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn update_user_access(
        &self,
        request: Request<pb::UpdateUserAccessRequest>,
    ) -> Result<Response<pb::UpdateUserAccessResponse>, Status> {
        self.admin(&request).await?;
        let correlation_id = correlation_id(&request);
        let req = request.into_inner();
        let role = match req.role() {
            pb::Role::Unspecified => None,
            pb::Role::Customer => Some(Role::Customer),
            pb::Role::Admin => Some(Role::Admin),
        };
        let tier = match req.tier() {
            pb::Tier::Unspecified => None,
            pb::Tier::Standard => Some(Tier::Standard),
            pb::Tier::Vip => Some(Tier::Vip),
        };
        let user = self
            .service
            .update_access(&req.user_id, role, tier, &correlation_id)
            .await?;
        Ok(Response::new(pb::UpdateUserAccessResponse {
            user: Some(user_pb(&user)),
        }))
    }
}
