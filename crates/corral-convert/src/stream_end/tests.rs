//! The end decision on whole streams, split every way.

use proptest::prelude::*;

use super::{EndFraming, StreamEnd};

/// The decision for `body` pushed in chunks of `step` bytes.
fn ended(body: &[u8], step: usize, framing: EndFraming) -> bool {
    let mut end = StreamEnd::new(framing);
    for chunk in body.chunks(step.max(1)) {
        end.push(chunk);
    }
    end.ended_properly()
}

fn every_split(body: &[u8], framing: EndFraming) -> bool {
    let whole = ended(body, body.len().max(1), framing);
    for step in 1..=body.len().max(1) {
        assert_eq!(
            ended(body, step, framing),
            whole,
            "split every {step} bytes changed the answer"
        );
    }
    whole
}

const TOOL_CALL: &[u8] = b"{\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":{\"done\":true,\"status\":\"success\",\"error\":\"x\"}}}]},\"done\":false}\n";

#[test]
fn a_tool_call_whose_arguments_say_done_does_not_end_the_stream() {
    assert!(!every_split(TOOL_CALL, EndFraming::NdJson));
    let mut whole = TOOL_CALL.to_vec();
    whole.extend_from_slice(b"{\"done\":true,\"done_reason\":\"stop\",\"eval_count\":3}\n");
    assert!(every_split(&whole, EndFraming::NdJson));
}

#[test]
fn the_final_object_status_or_error_ends_an_ndjson_stream() {
    assert!(every_split(b"{\"done\":false}\n{\"done\":true}\n", EndFraming::NdJson));
    assert!(every_split(
        b"{\"status\":\"pulling\"}\n{\"status\":\"success\"}\n",
        EndFraming::NdJson
    ));
    assert!(every_split(
        b"{\"done\":false}\n{\"error\":\"out of memory\"}\n",
        EndFraming::NdJson
    ));
    // Without its newline the last line still counts; blank lines after it change nothing.
    assert!(every_split(b"{\"done\":false}\n{\"done\":true}", EndFraming::NdJson));
    assert!(every_split(b"{\"done\":true}\n\n\r\n", EndFraming::NdJson));
}

#[test]
fn anything_else_does_not_end_an_ndjson_stream() {
    for body in [
        &b""[..],
        b"{\"done\":true}\n{\"done\":false}\n",
        b"{\"done\":\"true\"}\n",
        b"{\"status\":\"success\"}\n{\"status\":\"downloading\"}\n",
        b"{\"done\":true,\"eval_count\":",
        b"{\"message\":{\"content\":\"\\\"done\\\":true\"},\"done\":false}\n",
        b"[{\"done\":true}]\n",
        b"\"done\":true\n",
    ] {
        assert!(
            !every_split(body, EndFraming::NdJson),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn sse_ends_with_done_or_an_error_event() {
    assert!(every_split(
        b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n",
        EndFraming::Sse
    ));
    assert!(every_split(
        b"data: {\"choices\":[]}\n\ndata: {\"error\":{\"message\":\"x\"}}\n\n",
        EndFraming::Sse
    ));
    assert!(!every_split(b"data: {\"choices\":[]}\n\n", EndFraming::Sse));
    assert!(!every_split(
        b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\"data: [DONE]\"}}]}}]}\n\n",
        EndFraming::Sse
    ));
    assert!(!every_split(
        b"data: [DONE]\n\ndata: {\"choices\":[]}\n\n",
        EndFraming::Sse
    ));
}

#[test]
fn an_overlong_last_line_is_not_taken_for_a_final_one() {
    let mut body = b"{\"done\":true,\"pad\":\"".to_vec();
    body.resize(super::MAX_END_LINE + 10, b'a');
    body.extend_from_slice(b"\"}\n");
    assert!(!ended(&body, 1 << 20, EndFraming::NdJson));
    // A long line before the end does not matter.
    body.extend_from_slice(b"{\"done\":true}\n");
    assert!(ended(&body, 1 << 20, EndFraming::NdJson));
}

proptest! {
    #[test]
    fn the_answer_does_not_depend_on_the_split(
        lines in proptest::collection::vec(
            prop_oneof![
                Just("{\"done\":false,\"message\":{\"content\":\"a\\n\"}}".to_owned()),
                Just("{\"done\":true}".to_owned()),
                Just("{\"tool\":{\"done\":true}}".to_owned()),
                Just("".to_owned()),
                Just("{\"status\":\"success\"}".to_owned()),
                "[ -~]{0,20}",
            ],
            0..8,
        ),
        trailing_newline in any::<bool>(),
        step in 1usize..40,
    ) {
        let mut body = lines.join("\n");
        if trailing_newline {
            body.push('\n');
        }
        let whole = ended(body.as_bytes(), body.len().max(1), EndFraming::NdJson);
        prop_assert_eq!(ended(body.as_bytes(), step, EndFraming::NdJson), whole);
    }
}
