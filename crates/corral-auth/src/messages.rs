//! Client-facing message texts, exactly as Open WebUI sends them in `{"detail": ...}`.
//!
//! Clients and Open WebUI's own frontend match on some of these strings, so they are kept byte for byte.
//! The comment on each names the status code the reference pairs it with.

/// 401 when no token or key was presented at all.
pub const NOT_AUTHENTICATED: &str = "Not authenticated";

/// 401 from `verified`/`admin` role checks (the reference uses 401, not 403), and 403 when signup is closed.
pub const ACCESS_PROHIBITED: &str =
    "You do not have permission to access this resource. Please contact your administrator for assistance.";

/// 403 when an action is refused to protect the instance (changing or deleting the first admin).
pub const ACTION_PROHIBITED: &str = "The requested action has been restricted as a security measure.";

/// 400 for a wrong email or password at sign-in.
pub const INVALID_CRED: &str =
    "The email or password provided is incorrect. Please check for typos and try logging in again.";

/// 400 when signing up with an email that already has an account.
pub const EMAIL_TAKEN: &str =
    "Uh-oh! This email is already registered. Sign in with your existing account or choose another email to start anew.";

/// 401 when a JWT's user no longer exists, and when an API key is unknown.
pub const INVALID_TOKEN: &str = "Your session has expired or the token is invalid. Please sign in again.";

/// 401 when a JWT has a bad signature, has expired or is garbage.
pub const UNAUTHORIZED: &str = "401 Unauthorized";

/// 401 when a JWT's `jti` has been revoked by sign-out.
pub const TOKEN_REVOKED: &str = "Invalid token";

/// 401 when the trusted email header disagrees with the token's user.
pub const USER_MISMATCH: &str = "User mismatch. Please sign in again.";

/// 403 when an API key is used while API keys are disabled or the user lacks the permission.
pub const API_KEY_NOT_ALLOWED: &str = "Use of API key is not enabled in the environment.";

/// 403 when creating an API key is not allowed.
pub const API_KEY_CREATION_NOT_ALLOWED: &str = "API key creation is not allowed in the environment.";

/// 404 when the user has no API key.
pub const API_KEY_NOT_FOUND: &str = "Oops! It looks like there's a hiccup. The API key is missing. Please make sure to provide a valid API key to access this feature.";

/// 403 when an API key is used on a path outside the allowed endpoints.
pub const API_KEY_ENDPOINT_NOT_ALLOWED: &str = "API key not allowed to access this endpoint.";

/// 403 when a user may not use a model (or the model has no record and the user is not an admin).
pub const MODEL_NOT_FOUND: &str = "Model not found";

/// 429 from the sign-in rate limiter.
pub const RATE_LIMIT_EXCEEDED: &str = "API rate limit exceeded";

/// 400 at sign-in when trusted-header SSO is configured but the header is missing.
pub const INVALID_TRUSTED_HEADER: &str =
    "Your provider has not provided a trusted header. Please contact your administrator for assistance.";

/// 400 at sign-in with authentication disabled when users already exist.
pub const EXISTING_USERS: &str = "You can't turn off authentication because there are existing users. If you want to disable WEBUI_AUTH, make sure your web interface doesn't have any existing users and is a fresh installation.";
