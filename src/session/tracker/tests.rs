use super::*;

fn client(t: &mut Tracker, kinds: &[Kind]) {
    for &k in kinds {
        t.sent(k, Owner::Client).expect("in step");
    }
}

fn ended(route: Result<Route, OutOfStep>) -> bool {
    matches!(route, Ok(Route::Ended { .. }))
}

fn relayed(route: Result<Route, OutOfStep>) -> bool {
    matches!(route, Ok(Route::Relay))
}

#[test]
fn an_error_skips_to_the_next_sync() {
    let mut t = Tracker::default();
    client(&mut t, &[Kind::Parse, Kind::Bind, Kind::Execute, Kind::Sync, Kind::Query]);
    assert_eq!(t.batches_in_flight(), 2);
    assert!(ended(t.on_server(b'1')));
    assert!(ended(t.on_server(b'E')));
    assert_eq!(t.take_dropped().len(), 1);
    assert!(ended(t.on_server(b'Z')));
    assert!(relayed(t.on_server(b'T')));
    assert!(relayed(t.on_server(b'E')), "an error inside a Query does not end it");
    assert!(ended(t.on_server(b'Z')));
    assert!(t.is_empty());
    assert!(matches!(t.on_server(b'D'), Ok(Route::Unexpected)));
}

#[test]
fn after_an_error_the_server_discards_messages_until_a_sync() {
    // Parse, Flush; the error arrives; then Bind, Execute, Sync: only the Sync is answered.
    let mut t = Tracker::default();
    client(&mut t, &[Kind::Parse]);
    assert!(ended(t.on_server(b'E')));
    assert!(!t.is_empty() && !t.last_ends_batch(), "the server still waits for a Sync");
    client(&mut t, &[Kind::Bind, Kind::Execute, Kind::Query]);
    assert_eq!(t.take_dropped().len(), 3);
    client(&mut t, &[Kind::Sync]);
    assert!(ended(t.on_server(b'Z')));
    assert!(t.is_empty());
}

#[test]
fn replies_must_fit_the_message_they_answer() {
    for (kind, tag) in [
        (Kind::Parse, b'2'),
        (Kind::Bind, b'Z'),
        (Kind::Close, b'1'),
        (Kind::Describe, b'D'),
        (Kind::Execute, b'Z'),
        (Kind::Execute, b'T'),
        (Kind::Sync, b'C'),
        (Kind::Query, b'1'),
        (Kind::FunctionCall, b'D'),
    ] {
        let mut t = Tracker::default();
        client(&mut t, &[kind]);
        assert_eq!(t.on_server(tag).err(), Some(OutOfStep::Reply(tag, Some(kind))), "{kind:?} '{}'", tag as char);
    }
    let mut t = Tracker::default();
    client(&mut t, &[Kind::Describe, Kind::FunctionCall]);
    assert!(relayed(t.on_server(b't')));
    assert!(ended(t.on_server(b'n')));
    assert!(relayed(t.on_server(b'V')));
    assert!(ended(t.on_server(b'Z')));
}

#[test]
fn syncs_sent_before_copy_data_are_ignored_by_the_server() {
    // tokio-postgres: Bind, Execute, Sync, CopyData..., CopyDone, Sync.
    let mut t = Tracker::default();
    client(&mut t, &[Kind::Bind, Kind::Execute, Kind::Sync, Kind::CopyData, Kind::CopyData, Kind::CopyEnd, Kind::Sync]);
    assert!(ended(t.on_server(b'2')));
    assert!(relayed(t.on_server(b'G')));
    assert_eq!(t.batches_in_flight(), 1);
    assert!(ended(t.on_server(b'C')));
    assert!(ended(t.on_server(b'Z')));
    assert!(t.is_empty());
    // The same when the CopyInResponse arrives before the client has sent its data.
    client(&mut t, &[Kind::Bind, Kind::Execute, Kind::Sync]);
    assert!(ended(t.on_server(b'2')));
    assert!(relayed(t.on_server(b'G')));
    assert!(!t.last_ends_batch());
    client(&mut t, &[Kind::Sync, Kind::CopyData, Kind::CopyEnd, Kind::Sync]);
    assert_eq!(t.batches_in_flight(), 1);
    assert!(ended(t.on_server(b'C')));
    assert!(ended(t.on_server(b'Z')));
    assert!(t.is_empty());
}

#[test]
fn a_copy_ends_when_the_server_ends_it() {
    // Simple-protocol COPY, a bad row: ErrorResponse and ReadyForQuery end it; the client's
    // later CopyData and CopyDone are ignored, its next Sync and Query are answered.
    let mut t = Tracker::default();
    client(&mut t, &[Kind::Query]);
    assert!(relayed(t.on_server(b'G')));
    client(&mut t, &[Kind::CopyData]);
    assert!(relayed(t.on_server(b'E')));
    assert!(ended(t.on_server(b'Z')));
    assert!(t.is_empty() && t.last_ends_batch());
    client(&mut t, &[Kind::CopyData, Kind::CopyEnd, Kind::Sync, Kind::Query]);
    assert!(ended(t.on_server(b'Z')));
    assert!(relayed(t.on_server(b'C')));
    assert!(ended(t.on_server(b'Z')));
    assert!(t.is_empty());
    // Extended-protocol COPY, a bad row: the server then discards up to the next Sync.
    client(&mut t, &[Kind::Bind, Kind::Execute, Kind::Sync]);
    assert!(ended(t.on_server(b'2')));
    assert!(relayed(t.on_server(b'G')));
    client(&mut t, &[Kind::CopyData]);
    assert!(ended(t.on_server(b'E')));
    assert!(!t.is_empty(), "the server waits for a Sync");
    client(&mut t, &[Kind::CopyData, Kind::CopyEnd, Kind::Sync]);
    assert!(ended(t.on_server(b'Z')));
    assert!(t.is_empty());
}

#[test]
fn a_message_before_any_copy_data_fails_the_copy_and_is_never_answered() {
    let mut t = Tracker::default();
    client(&mut t, &[Kind::Query, Kind::Query]);
    assert!(relayed(t.on_server(b'G')));
    assert_eq!(t.take_dropped().len(), 1);
    assert!(relayed(t.on_server(b'E')));
    assert!(ended(t.on_server(b'Z')));
    assert!(t.is_empty());
}

#[test]
fn messages_after_copy_data_without_copydone_are_ambiguous() {
    // The review's route: COPY, data, then a Query and Syncs, all before the CopyInResponse.
    let mut t = Tracker::default();
    client(&mut t, &[Kind::Query, Kind::CopyData, Kind::Query, Kind::Sync]);
    assert_eq!(t.on_server(b'G').err(), Some(OutOfStep::Ambiguous));
    // The same sent after the CopyInResponse.
    for next in [Kind::Query, Kind::Parse] {
        let mut t = Tracker::default();
        client(&mut t, &[Kind::Query]);
        assert!(relayed(t.on_server(b'G')));
        client(&mut t, &[Kind::CopyData]);
        assert_eq!(t.sent(next, Owner::Client), Err(OutOfStep::Ambiguous), "{next:?}");
    }
    // While the client has not ended its data, the server owes nothing but an error.
    let mut t = Tracker::default();
    client(&mut t, &[Kind::Query]);
    assert!(relayed(t.on_server(b'G')));
    assert_eq!(t.on_server(b'Z').err(), Some(OutOfStep::Reply(b'Z', Some(Kind::Query))));
}

#[test]
fn a_sync_inside_copy_data_is_ignored_by_a_copy_that_succeeds_and_ambiguous_in_one_that_fails() {
    for copy_in_response_first in [false, true] {
        for fails in [false, true] {
            let mut t = Tracker::default();
            client(&mut t, &[Kind::Query]);
            if copy_in_response_first {
                assert!(relayed(t.on_server(b'G')));
            }
            client(&mut t, &[Kind::CopyData, Kind::Sync, Kind::CopyData, Kind::CopyEnd]);
            if !copy_in_response_first {
                assert!(relayed(t.on_server(b'G')));
            }
            if fails {
                assert_eq!(t.on_server(b'E').err(), Some(OutOfStep::Ambiguous));
                continue;
            }
            assert!(relayed(t.on_server(b'C')));
            assert!(ended(t.on_server(b'Z')));
            assert!(t.is_empty(), "the Sync inside the data is owed nothing");
            // A later error is not the COPY's.
            client(&mut t, &[Kind::Query]);
            assert!(relayed(t.on_server(b'E')));
            assert!(ended(t.on_server(b'Z')));
        }
    }
}

#[test]
fn proxy_entries_are_routed_to_their_owner() {
    let mut t = Tracker::default();
    let injection = || Owner::Injection { before_simple: false, own_sync: false };
    t.sent(Kind::Bind, injection()).expect("in step");
    t.sent(Kind::Execute, injection()).expect("in step");
    client(&mut t, &[Kind::Parse]);
    t.sent(Kind::Bind, Owner::Refusal(crate::protocol::ProxyError::ReservedName.into())).expect("in step");
    client(&mut t, &[Kind::Sync]);
    assert!(matches!(t.on_server(b'2'), Ok(Route::Ended { owner: Owner::Injection { .. } })));
    assert!(matches!(t.on_server(b'D'), Ok(Route::Swallow)));
    assert!(matches!(t.on_server(b'C'), Ok(Route::Ended { owner: Owner::Injection { .. } })));
    assert!(matches!(t.on_server(b'1'), Ok(Route::Ended { owner: Owner::Client })));
    assert!(matches!(t.on_server(b'E'), Ok(Route::Ended { owner: Owner::Refusal(_) })));
    assert!(ended(t.on_server(b'Z')));
}
