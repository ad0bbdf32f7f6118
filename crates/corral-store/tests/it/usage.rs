//! Usage records: batches written once even when retried, reports grouped and filtered, pruning.

use corral_store::{Store, UsageDimension, UsageQuery, UsageRecord};

const DAY: i64 = 86_400_000;
const T0: i64 = 1_700_000_000_000;

fn record(n: usize, user: &str, key: Option<&str>, groups: &[&str], model: &str, at_ms: i64) -> UsageRecord {
    UsageRecord {
        id: format!("00000000-0000-0000-0000-{n:012}"),
        at_ms,
        user_id: Some(user.to_owned()),
        key_id: key.map(str::to_owned),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        model_asked: model.to_owned(),
        model_run: format!("{model}:latest"),
        instance: Some((n % 2) as i32),
        route: "chat".to_owned(),
        status: if n == 3 { 500 } else { 200 },
        streamed: n.is_multiple_of(2),
        cancelled: n == 4,
        estimated: n == 4,
        input_tokens: 10 * n as i64,
        output_tokens: n as i64,
        ttft_ms: Some(5),
        duration_ms: 20,
    }
}

fn all() -> UsageQuery {
    UsageQuery {
        from_ms: 0,
        to_ms: i64::MAX,
        ..UsageQuery::default()
    }
}

fn usage_is_written_once_grouped_filtered_and_pruned(store: &Store) {
    let records = vec![
        record(1, "alice", Some("k1"), &["blue", "red"], "llama3.2", T0),
        record(2, "alice", None, &["blue", "red"], "llama3.2", T0 + 1),
        record(3, "bob", Some("k2"), &["blue"], "all-minilm", T0 + DAY),
        record(4, "bob", Some("k2"), &[], "llama3.2", T0 + DAY + 5),
    ];
    assert_eq!(store.insert_usage(&records).unwrap(), 4);
    // A retried batch (its acknowledgement lost) adds nothing.
    assert_eq!(store.insert_usage(&records[1..]).unwrap(), 0);
    assert_eq!(store.usage_records().unwrap(), records);

    let total = store.usage_report(&all()).unwrap();
    assert_eq!(total.len(), 1);
    let t = &total[0];
    assert_eq!((t.requests, t.input_tokens, t.output_tokens), (4, 100, 10));
    assert_eq!((t.cancelled, t.failed, t.estimated, t.streamed), (1, 1, 1, 2));
    assert_eq!((t.ttft_ms_sum, t.ttft_count, t.duration_ms_sum), (20, 4, 80));

    let by_user = store
        .usage_report(&UsageQuery {
            group_by: vec![UsageDimension::User],
            ..all()
        })
        .unwrap();
    let users: Vec<_> = by_user
        .iter()
        .map(|r| (r.user_id.as_deref(), r.requests, r.input_tokens, r.model.as_deref()))
        .collect();
    assert_eq!(users, [(Some("alice"), 2, 30, None), (Some("bob"), 2, 70, None)]);

    // A request counts once under each of its groups; one without a group under none.
    let by_group = store
        .usage_report(&UsageQuery {
            group_by: vec![UsageDimension::Group],
            ..all()
        })
        .unwrap();
    let mut groups: Vec<_> = by_group.iter().map(|r| (r.group_id.clone(), r.requests)).collect();
    groups.sort();
    assert_eq!(
        groups,
        [(None, 1), (Some("blue".to_owned()), 3), (Some("red".to_owned()), 2)]
    );

    let by_day_model = store
        .usage_report(&UsageQuery {
            group_by: vec![UsageDimension::Day, UsageDimension::Model],
            ..all()
        })
        .unwrap();
    let rows: Vec<_> = by_day_model
        .iter()
        .map(|r| (r.day.unwrap() - T0 / DAY, r.model.clone().unwrap(), r.requests))
        .collect();
    assert_eq!(
        rows,
        [
            (0, "llama3.2:latest".to_owned(), 2),
            (1, "all-minilm:latest".to_owned(), 1),
            (1, "llama3.2:latest".to_owned(), 1)
        ]
    );

    let filtered = |q: UsageQuery| store.usage_report(&q).unwrap()[0].requests;
    assert_eq!(
        filtered(UsageQuery {
            key: Some("k2".into()),
            ..all()
        }),
        2
    );
    assert_eq!(
        filtered(UsageQuery {
            group: Some("red".into()),
            ..all()
        }),
        2
    );
    assert_eq!(
        filtered(UsageQuery {
            model: Some("llama3.2".into()),
            ..all()
        }),
        3
    );
    assert_eq!(
        filtered(UsageQuery {
            instance: Some(1),
            ..all()
        }),
        2
    );
    assert_eq!(
        filtered(UsageQuery {
            user: Some("nobody".into()),
            ..all()
        }),
        0
    );
    assert_eq!(
        filtered(UsageQuery {
            from_ms: T0 + 1,
            to_ms: T0 + DAY,
            ..all()
        }),
        1
    );
    let by_instance = store
        .usage_report(&UsageQuery {
            group_by: vec![UsageDimension::Instance, UsageDimension::Key],
            ..all()
        })
        .unwrap();
    assert_eq!(by_instance.len(), 4);

    assert_eq!(store.prune_usage(T0 + DAY).unwrap(), 2);
    assert_eq!(store.usage_records().unwrap(), records[2..]);
    let by_group = store
        .usage_report(&UsageQuery {
            group_by: vec![UsageDimension::Group],
            ..all()
        })
        .unwrap();
    assert_eq!(by_group.iter().map(|r| r.requests).sum::<i64>(), 2);
}

fn a_large_batch_is_written(store: &Store) {
    let records: Vec<_> = (0..2000)
        .map(|n| {
            record(
                n + 10,
                "carol",
                Some("k"),
                &["g1", "g2", "g3"],
                "llama3.2",
                T0 + n as i64,
            )
        })
        .collect();
    assert_eq!(store.insert_usage(&records).unwrap(), 2000);
    let t = &store.usage_report(&all()).unwrap()[0];
    assert_eq!(t.requests, 2000);
    assert_eq!(t.input_tokens, records.iter().map(|r| r.input_tokens).sum::<i64>());
}

on_both!(
    usage_is_written_once_grouped_filtered_and_pruned,
    a_large_batch_is_written
);
