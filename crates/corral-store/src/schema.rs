//! Every table, as diesel sees it. Both backends share this schema.

diesel::table! {
    settings (key) {
        key -> Text,
        value -> Text,
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
    state_revisions (area) {
        area -> Text,
        revision -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(settings, ollama_connections, state_revisions);
