//! Authentication and authorisation logic for Corral, with no IO.
#![doc = include_str!("../README.md")]

mod access;
mod api_key;
mod credential;
mod error;
pub mod limits;
pub mod messages;
mod params;
mod password;
mod rate_limit;
mod role;
mod system_prompt;
mod token;
mod user_info;

pub use access::{can_read, can_write, has_access, AccessControl, Grants, ModelRecord, Permission};
pub use api_key::{
    constant_time_eq, generate_api_key, generate_api_key_with, is_well_formed_api_key, looks_like_api_key, HashedKey,
    PlainKey, API_KEY_HEX_LEN, API_KEY_PREFIX,
};
pub use credential::{
    api_key_endpoint_allowed, parse_allowed_endpoints, parse_authorization, parse_authorization_bytes,
    select_credential, token_from_cookie_header, Credential, CredentialSource, Presented, TOKEN_COOKIE,
};
pub use error::AuthError;
pub use params::{apply_params_ollama, apply_params_openai};
pub use password::{
    check_password_policy, hash_password, hash_password_in, hash_password_with, is_valid_email, normalize_email,
    verify_dummy_password, verify_dummy_password_in, verify_password, verify_password_in, PasswordHash, PasswordParams,
    Scratch, MAX_PASSWORD_BYTES,
};
pub use rate_limit::{RateLimitPolicy, RateLimiter, RetryAfter, SigninLimiter, SLOWED_ATTEMPTS};
pub use role::{Access, Role};
pub use system_prompt::{apply_system_prompt, render_system_template};
pub use token::{
    generate_jwt_secret, issue_token, issue_token_with, parse_expires_in, verify_token, Claims, Token,
    DEFAULT_EXPIRES_IN,
};
pub use user_info::{
    chat_id_header, user_info_headers, UserInfo, CHAT_ID_HEADER, USER_EMAIL_HEADER, USER_ID_HEADER, USER_NAME_HEADER,
    USER_ROLE_HEADER,
};
