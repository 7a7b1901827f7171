//! `ChatTemplate` renders like transformers' `apply_chat_template` (fixtures written by
//! `reference/chat_template_goldens.py` into `tests/chat_templates/cases.json`).

use moe_data::{ChatMessage, ChatTemplate, Error};
use std::path::{Path, PathBuf};

fn cases() -> Vec<serde_json::Value> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/chat_templates/cases.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn messages(c: &serde_json::Value) -> Vec<ChatMessage> {
    c["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

#[test]
fn chat_templates_render_exactly_like_transformers() {
    let cases = cases();
    assert!(cases.len() >= 6);
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let t = ChatTemplate::new(
            c["template"].as_str().unwrap(),
            &PathBuf::from(name),
            c["bos_token"].as_str().unwrap(),
            c["eos_token"].as_str().unwrap(),
        )
        .unwrap();
        let got = t.render(&messages(c), c["add_generation_prompt"].as_bool().unwrap());
        match (c.get("expected"), got) {
            (Some(want), Ok(got)) => assert_eq!(got, want.as_str().unwrap(), "{name}"),
            (None, Err(e)) => {
                let want = c["error"].as_str().unwrap();
                assert!(e.to_string().contains(want), "{name}: {e}");
            }
            (w, g) => panic!("{name}: expected {w:?}, got {g:?}"),
        }
    }
}

#[test]
fn chat_template_comes_from_the_checkpoint_directory() {
    let dir = tempfile::tempdir().unwrap();
    assert!(ChatTemplate::from_dir(dir.path()).unwrap().is_none(), "no template: None");
    let cfg = serde_json::json!({
        "bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>",
        "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"}]
    });
    std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
    let t = ChatTemplate::from_dir(dir.path()).unwrap().unwrap();
    assert_eq!(t.render(&[ChatMessage::new("user", "hi")], true).unwrap(), "<s>hi</s>");
    // chat_template.jinja (what transformers 5 saves) wins
    std::fs::write(dir.path().join("chat_template.jinja"), "[{{ messages | length }}]").unwrap();
    assert_eq!(ChatTemplate::from_dir(dir.path()).unwrap().unwrap().render(&[], false).unwrap(), "[0]");
    // a template that does not compile is an error naming its file
    std::fs::write(dir.path().join("chat_template.jinja"), "{% for %}").unwrap();
    let e = ChatTemplate::from_dir(dir.path()).unwrap_err();
    assert!(matches!(&e, Error::ChatTemplate { path, .. } if path.ends_with("chat_template.jinja")), "{e}");
}
