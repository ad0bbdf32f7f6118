//! Usage records: batches written once even when retried, reports grouped and filtered, pruning.

use std::sync::Arc;

use corral_store::{Store, UsageContext, UsageDimension, UsageQuery, UsageRecord};

const DAY: i64 = 86_400_000;
const T0: i64 = 1_700_000_000_000;

fn record(n: usize, user: &str, key: Option<&str>, groups: &[&str], model: &str, at_ms: i64) -> UsageRecord {
    let context = UsageContext {
        id: 0,
        user_id: Some(user.to_owned()),
        key_id: key.map(str::to_owned),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        model_asked: model.to_owned(),
        model_run: format!("{model}:latest"),
        instance: Some((n % 2) as i32),
        route: "chat".to_owned(),
        streamed: n.is_multiple_of(2),
    };
    UsageRecord {
        at_ms,
        seq: n as i64,
        context: Arc::new(context.identified()),
        status: if n == 3 { 500 } else { 200 },
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
    // A batch retried whole (its acknowledgement lost) adds nothing.
    assert_eq!(store.insert_usage(&records).unwrap(), 0);
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
    // Two contexts (even and odd instances, streamed or not), each with its three groups: every
    // record counts once under each group.
    let by_group = store
        .usage_report(&UsageQuery {
            group_by: vec![UsageDimension::Group],
            ..all()
        })
        .unwrap();
    let counts: Vec<_> = by_group
        .iter()
        .map(|r| (r.group_id.as_deref().unwrap_or(""), r.requests))
        .collect();
    assert_eq!(counts, [("g1", 2000), ("g2", 2000), ("g3", 2000)]);
    assert_eq!(store.usage_records().unwrap(), records);
}

/// Records written before usage was split into records and contexts are carried over whole:
/// read back as they were, counted with new records of the same caller, and pruned.
fn records_of_the_previous_shape_are_carried_over(store: &Store) {
    // Back before the day sums, batches and contexts.
    store.revert_last_migration();
    store.revert_last_migration();
    store.revert_last_migration();
    store.execute_sql(
        "INSERT INTO usage_records (id, at_ms, user_id, key_id, model_asked, model_run, instance, route, \
         status, streamed, cancelled, estimated, input_tokens, output_tokens, ttft_ms, duration_ms) VALUES \
         ('0193-b', 2000, 'bob', NULL, 'm', 'm:latest', NULL, 'generate', 500, FALSE, TRUE, TRUE, 1, 2, NULL, 7), \
         ('0193-a', 1000, 'alice', 'k1', 'llama3.2', 'llama3.2:latest', 1, 'chat', 200, FALSE, FALSE, FALSE, \
         10, 1, 5, 20); \
         INSERT INTO usage_groups (record_id, group_id, at_ms) VALUES ('0193-a', 'red', 1000), \
         ('0193-a', 'blue', 1000), ('gone', 'blue', 1500);",
    );
    assert_eq!(store.migrate().unwrap(), 3);
    // The carried contexts have ids of their own, one per old record.
    let mut alice = record(1, "alice", Some("k1"), &["red", "blue"], "llama3.2", 1000);
    alice.context = Arc::new(UsageContext {
        id: -1,
        ..UsageContext::clone(&alice.context)
    });
    let bob = UsageRecord {
        at_ms: 2000,
        seq: 2,
        context: Arc::new(UsageContext {
            id: -2,
            user_id: Some("bob".to_owned()),
            key_id: None,
            groups: Vec::new(),
            model_asked: "m".to_owned(),
            model_run: "m:latest".to_owned(),
            instance: None,
            route: "generate".to_owned(),
            streamed: false,
        }),
        status: 500,
        cancelled: true,
        estimated: true,
        input_tokens: 1,
        output_tokens: 2,
        ttft_ms: None,
        duration_ms: 7,
    };
    assert_eq!(store.usage_records().unwrap(), [alice.clone(), bob.clone()]);

    // A new record of alice's (with the context's own id) is summed with the old one.
    let again = record(1, "alice", Some("k1"), &["blue", "red"], "llama3.2", 3000);
    assert_eq!(store.insert_usage(std::slice::from_ref(&again)).unwrap(), 1);
    let by_user = store
        .usage_report(&UsageQuery {
            group_by: vec![UsageDimension::User, UsageDimension::Group],
            ..all()
        })
        .unwrap();
    let rows: Vec<_> = by_user
        .iter()
        .map(|r| (r.user_id.as_deref(), r.group_id.as_deref(), r.requests, r.input_tokens))
        .collect();
    assert_eq!(
        rows,
        [
            (Some("alice"), Some("blue"), 2, 20),
            (Some("alice"), Some("red"), 2, 20),
            (Some("bob"), None, 1, 1)
        ]
    );

    // Pruned, the old records take their carried contexts with them.
    assert_eq!(store.prune_usage(2500).unwrap(), 2);
    assert_eq!(store.usage_records().unwrap(), [again]);
    assert_eq!(store.usage_report(&all()).unwrap()[0].requests, 1);
}

/// SQL text for `t` (test values only).
fn lit(t: Option<&str>) -> String {
    t.map_or_else(|| "NULL".to_owned(), |t| format!("'{}'", t.replace('\'', "''")))
}

/// Writes `records` as rows of the shape before batches (one row each, with their contexts),
/// as a release before batches left them.
fn insert_as_rows(store: &Store, records: &[UsageRecord]) {
    let mut sql = String::new();
    for r in records {
        let c = &r.context;
        sql.push_str(&format!(
            "INSERT INTO usage_contexts (id, user_id, key_id, model_asked, model_run, instance, route, streamed) \
             VALUES ({}, {}, {}, {}, {}, {}, {}, {}) ON CONFLICT DO NOTHING;",
            c.id,
            lit(c.user_id.as_deref()),
            lit(c.key_id.as_deref()),
            lit(Some(&c.model_asked)),
            lit(Some(&c.model_run)),
            c.instance.map_or_else(|| "NULL".to_owned(), |i| i.to_string()),
            lit(Some(&c.route)),
            c.streamed,
        ));
        for g in &c.groups {
            sql.push_str(&format!(
                "INSERT INTO usage_context_groups (context_id, group_id) VALUES ({}, {}) ON CONFLICT DO NOTHING;",
                c.id,
                lit(Some(g))
            ));
        }
        sql.push_str(&format!(
            "INSERT INTO usage_records (at_ms, seq, context_id, status, cancelled, estimated, input_tokens, \
             output_tokens, ttft_ms, duration_ms) VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {});",
            r.at_ms,
            r.seq,
            c.id,
            r.status,
            r.cancelled,
            r.estimated,
            r.input_tokens,
            r.output_tokens,
            r.ttft_ms.map_or_else(|| "NULL".to_owned(), |t| t.to_string()),
            r.duration_ms
        ));
    }
    store.execute_sql(&sql);
}

/// Reports summed from batches as they are unpacked equal the same reports summed by SQL from
/// rows of the shape before batches, for every grouping by one or two dimensions, each filter
/// and several time ranges; and with half of the records in each shape, the sums of both.
fn batches_are_reported_as_sql_reports_rows(store: &Store) {
    // A small deterministic generator: the same records on every run.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let users = ["alice", "bob", "carol"];
    let groups: [&[&str]; 4] = [&[], &["blue"], &["blue", "red"], &["red"]];
    let records: Vec<UsageRecord> = (0..600)
        .map(|n| {
            let context = UsageContext {
                id: 0,
                user_id: (next(5) != 0).then(|| users[next(3) as usize].to_owned()),
                key_id: (next(2) == 0).then(|| format!("k{}", next(3))),
                groups: groups[next(4) as usize].iter().map(|g| (*g).to_owned()).collect(),
                model_asked: ["llama3.2", "qwen"][next(2) as usize].to_owned(),
                model_run: ["llama3.2:latest", "qwen:7b"][next(2) as usize].to_owned(),
                instance: (next(4) != 0).then(|| next(3) as i32),
                route: "chat".to_owned(),
                streamed: next(2) == 0,
            };
            UsageRecord {
                // Three days, out of order within a few minutes, as requests end out of order.
                at_ms: T0 + (n as i64) * 430_000 + next(300_000) as i64,
                seq: 1_000 + n as i64,
                context: Arc::new(context.identified()),
                status: [200, 200, 200, 404, 500][next(5) as usize],
                cancelled: next(7) == 0,
                estimated: next(9) == 0,
                input_tokens: next(4000) as i64,
                output_tokens: next(900) as i64,
                ttft_ms: (next(3) != 0).then(|| next(2000) as i64),
                duration_ms: next(60_000) as i64,
            }
        })
        .collect();
    let mut queries = Vec::new();
    for a in UsageDimension::ALL {
        for b in UsageDimension::ALL {
            queries.push(UsageQuery {
                group_by: if a == b { vec![a] } else { vec![a, b] },
                ..all()
            });
        }
    }
    queries.push(all());
    // Ranges within a day, across days with whole days inside (the day sums and the partial
    // days at both ends), from a day's start, and to the end of time.
    let day_start = T0 / DAY * DAY;
    for (from, to) in [
        (T0 + DAY / 3, T0 + DAY + 7),
        (T0 + 2 * DAY, i64::MAX),
        (0, T0),
        (T0 + DAY / 3, T0 + 3 * DAY - 5),
        (day_start + DAY, day_start + 3 * DAY),
        (day_start + DAY - 1, day_start + 3 * DAY + 1),
    ] {
        for group_by in [vec![], vec![UsageDimension::Day, UsageDimension::User]] {
            queries.push(UsageQuery {
                from_ms: from,
                to_ms: to,
                group_by,
                ..UsageQuery::default()
            });
        }
    }
    let filters = [
        UsageQuery {
            user: Some("bob".to_owned()),
            ..all()
        },
        UsageQuery {
            key: Some("k1".to_owned()),
            ..all()
        },
        UsageQuery {
            model: Some("qwen".to_owned()),
            ..all()
        },
        UsageQuery {
            model: Some("llama3.2:latest".to_owned()),
            ..all()
        },
        UsageQuery {
            instance: Some(2),
            ..all()
        },
        UsageQuery {
            group: Some("red".to_owned()),
            ..all()
        },
    ];
    for f in filters {
        queries.push(f.clone());
        queries.push(UsageQuery {
            group_by: vec![UsageDimension::Group, UsageDimension::Model],
            ..f
        });
    }
    let reports = |store: &Store| -> Vec<Vec<corral_store::UsageRow>> {
        queries.iter().map(|q| store.usage_report(q).unwrap()).collect()
    };

    insert_as_rows(store, &records);
    let by_sql = reports(store);
    let total = queries.iter().position(|q| *q == all()).unwrap_or_default();
    assert_eq!(by_sql[total].len(), 1);
    assert_eq!(by_sql[total][0].requests as usize, records.len());
    assert_eq!(store.prune_usage(i64::MAX).unwrap(), records.len());
    assert_eq!(store.usage_records().unwrap(), []);

    // In small batches, as a gateway at a few requests a second writes them: more than a
    // report reads in one page.
    let mut start = 0;
    while start < records.len() {
        let end = (start + 1 + next(4) as usize).min(records.len());
        assert_eq!(store.insert_usage(&records[start..end]).unwrap(), end - start);
        start = end;
    }
    let by_batches = reports(store);
    for ((q, sql), batches) in queries.iter().zip(&by_sql).zip(&by_batches) {
        assert_eq!(sql, batches, "{q:?}");
    }
    // Folded into the day sums a few batches at a time, as the writer folds them: every report
    // the same at each step, and each batch folded once.
    let batches = store.count_rows("usage_batches");
    let mut folded = 0;
    loop {
        let n = store.fold_usage(1 + next(40) as usize).unwrap();
        if n == 0 {
            break;
        }
        folded += n;
        for ((q, sql), summed) in queries.iter().zip(&by_sql).zip(&reports(store)) {
            assert_eq!(sql, summed, "{q:?} with {folded} of {batches} batches folded");
        }
    }
    assert_eq!(folded, batches);
    assert_eq!(store.fold_usage(100).unwrap(), 0);
    assert!(store.count_rows("usage_days") > 0);
    let mut sorted = records.clone();
    sorted.sort_by_key(|r| (r.at_ms, r.seq));
    assert_eq!(store.usage_records().unwrap(), sorted);

    // Half in each shape: every report the same again.
    assert_eq!(store.prune_usage(i64::MAX).unwrap(), records.len());
    assert_eq!(store.count_rows("usage_days"), 0);
    let (older, newer) = records.split_at(records.len() / 2);
    insert_as_rows(store, older);
    assert_eq!(store.insert_usage(newer).unwrap(), newer.len());
    assert_eq!(reports(store), by_sql);

    // Pruned at any time, even inside a batch and inside a day summed: exactly the records
    // before it go, from the batches and from the day sums, as SQL sums the records left.
    assert!(store.fold_usage(usize::MAX).unwrap() > 0);
    let cut = T0 + DAY + DAY / 2 + 1;
    let before = records.iter().filter(|r| r.at_ms < cut).count();
    assert_eq!(store.prune_usage(cut).unwrap(), before);
    let mut left: Vec<_> = sorted.iter().filter(|r| r.at_ms >= cut).cloned().collect();
    left.sort_by_key(|r| (r.at_ms, r.seq));
    assert_eq!(store.usage_records().unwrap(), left);
    let total = &store.usage_report(&all()).unwrap()[0];
    assert_eq!(total.requests as usize, left.len());
    assert_eq!(total.input_tokens, left.iter().map(|r| r.input_tokens).sum::<i64>());
    let pruned = reports(store);
    let newer: Vec<_> = records.iter().filter(|r| r.at_ms >= cut).cloned().collect();
    store.prune_usage(i64::MAX).unwrap();
    insert_as_rows(store, &newer);
    for ((q, sql), summed) in queries.iter().zip(&reports(store)).zip(&pruned) {
        assert_eq!(sql, summed, "{q:?} after a prune at {cut}");
    }
}

/// `n` records of three users, `step_ms` apart from `T0`, written two at a time (a batch each,
/// as a gateway at a request a second writes them).
fn written_two_at_a_time(store: &Store, n: usize, step_ms: i64) -> Vec<UsageRecord> {
    let users = ["alice", "bob", "carol"];
    let records: Vec<UsageRecord> = (0..n)
        .map(|i| {
            record(
                i,
                users[i % 3],
                Some("k1"),
                &["blue"],
                "llama3.2",
                T0 + i as i64 * step_ms,
            )
        })
        .collect();
    for chunk in records.chunks(2) {
        assert_eq!(store.insert_usage(chunk).unwrap(), chunk.len());
    }
    records
}

/// Replicas folding batches into the day sums at once count each batch once.
fn batches_folded_at_once_are_counted_once(store: &Store) {
    written_two_at_a_time(store, 300, 1_000_000);
    let by_user = UsageQuery {
        group_by: vec![UsageDimension::User, UsageDimension::Day],
        ..all()
    };
    let before = (
        store.usage_report(&all()).unwrap(),
        store.usage_report(&by_user).unwrap(),
    );
    let batches = store.count_rows("usage_batches");
    let folded: usize = std::thread::scope(|s| {
        let folders: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut folded = 0;
                    loop {
                        match store.fold_usage(3) {
                            Ok(0) => break folded,
                            Ok(n) => folded += n,
                            Err(e) => panic!("folding failed: {e}"),
                        }
                    }
                })
            })
            .collect();
        folders.into_iter().map(|f| f.join().unwrap()).sum()
    });
    assert_eq!(folded, batches);
    assert_eq!(store.fold_usage(usize::MAX).unwrap(), 0);
    let after = (
        store.usage_report(&all()).unwrap(),
        store.usage_report(&by_user).unwrap(),
    );
    assert_eq!(after, before);
    assert_eq!(after.0[0].requests, 300);
}

/// Folds and prunes running at once (replicas writing usage, each pruning every hour) leave
/// exactly the records after the last cut, in the batches and in the day sums alike.
fn folds_and_prunes_at_once_leave_the_records_after_the_cut(store: &Store) {
    let records = written_two_at_a_time(store, 600, 430_000);
    let cuts = [T0 + DAY / 2 + 12_345, T0 + DAY + 7, T0 + 2 * DAY - 99_999];
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| while store.fold_usage(3).unwrap() > 0 {});
        }
        s.spawn(|| {
            for cut in cuts {
                store.prune_usage(cut).unwrap();
            }
        });
    });
    store.fold_usage(usize::MAX).unwrap();
    let last = cuts[2];
    let left: Vec<UsageRecord> = records.iter().filter(|r| r.at_ms >= last).cloned().collect();
    let queries = [
        all(),
        UsageQuery {
            group_by: vec![UsageDimension::User, UsageDimension::Day],
            ..all()
        },
        UsageQuery {
            from_ms: last - 5,
            to_ms: T0 + 3 * DAY + 1,
            group_by: vec![UsageDimension::Day],
            ..UsageQuery::default()
        },
    ];
    let summed: Vec<_> = queries.iter().map(|q| store.usage_report(q).unwrap()).collect();
    assert_eq!(summed[0][0].requests as usize, left.len());
    store.prune_usage(i64::MAX).unwrap();
    insert_as_rows(store, &left);
    for (q, summed) in queries.iter().zip(summed) {
        assert_eq!(store.usage_report(q).unwrap(), summed, "{q:?}");
    }
}

/// A record from before 1970 (a clock set wrong) stays out of the day sums and is still
/// counted once, by every report that covers it, folded or not.
fn records_before_1970_are_counted_once(store: &Store) {
    let records = vec![
        record(1, "alice", None, &[], "m", -1000),
        record(2, "alice", None, &[], "m", 1000),
        record(3, "bob", None, &[], "m", DAY + 5),
    ];
    assert_eq!(store.insert_usage(&records).unwrap(), 3);
    let range = |from_ms, to_ms, group_by| UsageQuery {
        from_ms,
        to_ms,
        group_by,
        ..UsageQuery::default()
    };
    let queries = [
        range(-DAY, 2 * DAY, vec![UsageDimension::Day]),
        range(-DAY, i64::MAX, vec![UsageDimension::User]),
        range(-500, DAY + 6, vec![]),
        range(0, 2 * DAY, vec![]),
        range(i64::MIN, i64::MAX, vec![]),
    ];
    let unpacked: Vec<_> = queries.iter().map(|q| store.usage_report(q).unwrap()).collect();
    assert_eq!(
        store.fold_usage(10).unwrap(),
        2,
        "one batch before the day turns, one after"
    );
    let summed: Vec<_> = queries.iter().map(|q| store.usage_report(q).unwrap()).collect();
    assert_eq!(summed, unpacked);
    let requests = |rows: &[corral_store::UsageRow]| rows.iter().map(|r| r.requests).sum::<i64>();
    assert_eq!(summed.iter().map(|r| requests(r)).collect::<Vec<_>>(), [3, 3, 2, 2, 3]);
}

on_both!(
    usage_is_written_once_grouped_filtered_and_pruned,
    records_before_1970_are_counted_once,
    folds_and_prunes_at_once_leave_the_records_after_the_cut,
    batches_folded_at_once_are_counted_once,
    a_large_batch_is_written,
    records_of_the_previous_shape_are_carried_over,
    batches_are_reported_as_sql_reports_rows
);
