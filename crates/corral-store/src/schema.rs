//! Every table, as diesel sees it; both backends share this one schema.
//!
//! This is the file the root `diesel.toml` points `print_schema` at: keep it to table definitions,
//! because regenerating it overwrites everything else (and then put this module doc line back).
//! Types are the portable ones: TEXT ids and JSON, BIGINT Unix seconds, INTEGER, BOOLEAN.

diesel::table! {
    api_keys (id) {
        id -> Text,
        user_id -> Text,
        name -> Text,
        key_prefix -> Text,
        key_hash -> Text,
        created_at -> BigInt,
        last_used_at -> Nullable<BigInt>,
        expires_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    auths (user_id) {
        user_id -> Text,
        password_hash -> Text,
        updated_at -> BigInt,
    }
}

diesel::table! {
    group_members (group_id, user_id) {
        group_id -> Text,
        user_id -> Text,
    }
}

diesel::table! {
    groups (id) {
        id -> Text,
        name -> Text,
        description -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    limit_counters (scope, subject_id, metric, bucket, replica) {
        scope -> Text,
        subject_id -> Text,
        metric -> Text,
        bucket -> BigInt,
        replica -> Text,
        value -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    limits (scope, subject_id) {
        scope -> Text,
        subject_id -> Text,
        spec -> Text,
        updated_at -> BigInt,
    }
}

diesel::table! {
    models (id) {
        id -> Text,
        base_model_id -> Nullable<Text>,
        name -> Text,
        user_id -> Nullable<Text>,
        params -> Text,
        meta -> Text,
        access_control -> Nullable<Text>,
        is_active -> Bool,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    ollama_connections (idx) {
        idx -> Integer,
        url -> Text,
        config -> Text,
    }
}

diesel::table! {
    revoked_tokens (jti) {
        jti -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    settings (key) {
        key -> Text,
        value -> Text,
        updated_at -> BigInt,
    }
}

diesel::table! {
    state_revisions (area) {
        area -> Text,
        revision -> BigInt,
    }
}

diesel::table! {
    usage_batches (last_ms, batch_id) {
        last_ms -> BigInt,
        batch_id -> BigInt,
        first_ms -> BigInt,
        records -> Binary,
        rolled_up -> Bool,
    }
}

diesel::table! {
    usage_context_groups (context_id, group_id) {
        context_id -> BigInt,
        group_id -> Text,
    }
}

diesel::table! {
    usage_contexts (id) {
        id -> BigInt,
        user_id -> Nullable<Text>,
        key_id -> Nullable<Text>,
        model_asked -> Text,
        model_run -> Text,
        instance -> Nullable<Integer>,
        route -> Text,
        streamed -> Bool,
    }
}

diesel::table! {
    usage_days (day, context_id) {
        day -> BigInt,
        context_id -> BigInt,
        requests -> BigInt,
        input_tokens -> BigInt,
        output_tokens -> BigInt,
        cancelled -> BigInt,
        failed -> BigInt,
        estimated -> BigInt,
        ttft_ms_sum -> BigInt,
        ttft_count -> BigInt,
        duration_ms_sum -> BigInt,
    }
}

diesel::table! {
    usage_records (at_ms, seq) {
        at_ms -> BigInt,
        seq -> BigInt,
        context_id -> BigInt,
        status -> Integer,
        cancelled -> Bool,
        estimated -> Bool,
        input_tokens -> BigInt,
        output_tokens -> BigInt,
        ttft_ms -> Nullable<BigInt>,
        duration_ms -> BigInt,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        email -> Text,
        name -> Text,
        role -> Text,
        profile_image_url -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        last_active_at -> BigInt,
    }
}

diesel::joinable!(api_keys -> users (user_id));
diesel::joinable!(auths -> users (user_id));
diesel::joinable!(group_members -> groups (group_id));
diesel::joinable!(group_members -> users (user_id));
diesel::joinable!(models -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    api_keys,
    auths,
    group_members,
    groups,
    limit_counters,
    limits,
    models,
    ollama_connections,
    revoked_tokens,
    settings,
    state_revisions,
    usage_batches,
    usage_context_groups,
    usage_contexts,
    usage_days,
    usage_records,
    users,
);
