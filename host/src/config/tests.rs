use std::path::Path;
use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Settings, ConfigError> {
    Settings::from_toml(text, Path::new("."), "test.toml")
}

#[test]
fn a_minimal_config_gets_the_documented_defaults() {
    let s = parse(
        r#"
        [models.a]
        cmd = "server --port ${PORT}"
        ttl = 30
        "#,
    )
    .expect("valid");
    assert_eq!(s.listen, DEFAULT_LISTEN);
    let a = &s.models[0];
    assert_eq!(a.ttl, Some(Duration::from_secs(30)));
    assert_eq!(a.context_tokens, DEFAULT_CONTEXT_TOKENS);
    assert_eq!(a.size, None);
    assert_eq!(s.policies.eviction, PolicyRef::Builtin("adaptive".into()));
    assert_eq!(s.memory.budget("cpu").reserve, DEFAULT_RAM_RESERVE);
}

/// The defaults a program builds settings from are the ones an empty file gets.
#[test]
fn the_built_defaults_are_the_files_defaults() {
    let from_file = parse("").expect("an empty file is valid");
    // The file's default state folder comes from the environment; a program chooses its own.
    let built = Settings {
        state_dir: default_state_dir(),
        ..Settings::default()
    };
    assert_eq!(format!("{from_file:?}"), format!("{built:?}"));
    let m = parse("[models.a]\ncmd = \"s ${PORT}\"\n").expect("valid");
    let built = ModelSettings::new("a", m.models[0].backend.clone());
    assert_eq!(format!("{:?}", m.models[0]), format!("{built:?}"));
}

#[test]
fn every_problem_is_reported_with_its_key_path() {
    let err = parse(
        r#"
        listen = "nowhere"
        [memory]
        pressure = 1.5
        [memory.cpu]
        budget = "lots"
        [policies]
        eviction = "fifo"
        [models.a]
        cmd = "server"
        ttl = "soon"
        [models.d]
        cmd = "s ${PORT}"
        aliases = ["e"]
        [models.e]
        cmd = "s ${PORT}"
        [models.b]
        url = "https://example.com/v1"
        control = "magic"
        [models.c]
        [models.f]
        cmd = "s ${PORT}"
        parallel = 0
        "#,
    )
    .expect_err("invalid");
    let all = err.problems.join("\n");
    for needle in [
        "listen:",
        "memory.pressure:",
        "memory.cpu.budget:",
        "policies.eviction:",
        "models.a.cmd: never uses ${PORT}",
        "models.a.ttl:",
        "models.b.url:",
        "models.b.control:",
        "models.c: needs `cmd`",
        "models.f.parallel: must be at least 1",
        "models.d.aliases: \"e\" is the id of another model",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn unknown_keys_are_refused() {
    let err = parse("[models.a]\ncmd = \"s ${PORT}\"\nttll = 5\n").expect_err("typo");
    assert!(err.to_string().contains("ttll"), "{err}");
}

#[test]
fn the_trace_recorder_is_off_by_default_and_its_keys_are_checked() {
    assert_eq!(parse("").expect("valid").trace, None);
    let s = parse("[trace]\nrecord = \"logs/trace.jsonl\"\nkeep = 1\n").expect("valid");
    let t = s.trace.expect("recording");
    assert_eq!(
        t.path,
        Path::new("./logs/trace.jsonl"),
        "relative to the config"
    );
    assert_eq!(
        (t.max_bytes, t.keep),
        (crate::recorder::DEFAULT_MAX_BYTES, 1)
    );
    let e = parse("[trace]\nmax_bytes = 0\nkeep = 2\n").expect_err("invalid");
    assert!(
        e.problems.iter().any(|p| p.starts_with("trace.max_bytes:")),
        "{e}"
    );
    assert!(
        e.problems.iter().any(|p| p.contains("need `record`")),
        "{e}"
    );
    let e = parse("[trace]\nrecord = \"t\"\nmax_bytes = \"big\"\n").expect_err("invalid");
    assert!(
        e.problems.iter().any(|p| p.starts_with("trace.max_bytes:")),
        "{e}"
    );
}

#[test]
fn state_dir_is_relative_to_the_config_and_empty_keeps_nothing() {
    let s = parse("state_dir = \"state\"\n").expect("valid");
    assert_eq!(s.state_dir, Some(Path::new(".").join("state")));
    let s = parse("state_dir = \"\"\n").expect("valid");
    assert_eq!(s.state_dir, None);
}

#[test]
fn capabilities_translate_and_context_fallback_are_checked() {
    let s = parse(
        r#"
        [models.short]
        cmd = "llama-server --port ${PORT} --embeddings"
        context_tokens = 512
        context_fallback = "longer"
        translate = ["messages"]
        [models.long]
        cmd = "s ${PORT}"
        aliases = ["longer"]
        context_tokens = 8192
        capabilities = ["chat", "rerank"]
        "#,
    )
    .expect("valid");
    let (short, long) = (
        s.model("short").expect("short"),
        s.model("long").expect("long"),
    );
    assert_eq!(
        short.context_fallback.as_deref(),
        Some("long"),
        "an alias becomes the id"
    );
    assert!(
        short.capabilities.has(Capability::Embeddings),
        "from the flag"
    );
    assert_eq!(short.translate, [Api::Messages]);
    assert!(
        long.capabilities.has(Capability::Rerank)
            && !long.capabilities.has(Capability::Completions)
    );

    let err = parse(
        r#"
        [models.a]
        cmd = "s ${PORT}"
        context_tokens = 4096
        context_fallback = "b"
        [models.b]
        cmd = "s ${PORT}"
        context_tokens = 2048
        context_fallback = "nobody"
        [models.c]
        cmd = "s ${PORT}"
        capabilities = ["vision"]
        translate = ["grpc"]
        [models.d]
        cmd = "s ${PORT}"
        capabilities = []
        "#,
    )
    .expect_err("invalid");
    let text = err.to_string();
    for needle in [
        "models.a.context_fallback: b has a window of 2048 tokens, no larger than a's 4096",
        "models.b.context_fallback: \"nobody\" is not a configured model",
        "models.c.capabilities: \"vision\" is not one of chat, completions, embeddings, rerank",
        "models.c.translate: \"grpc\" is not one of responses, messages",
        "models.d.capabilities: is empty",
    ] {
        assert!(text.contains(needle), "{needle:?} in {text}");
    }
}

/// llama-swap's `useModelName` and `hooks.on_startup.preload`, as `import llama-swap` writes
/// them: a started server may be sent another model name; `api_key` still needs `url`.
#[test]
fn a_started_server_takes_use_model_name_and_preload_but_not_api_key() {
    let s = parse(
        "[models.a]\ncmd = \"s --port ${PORT}\"\nuse_model_name = \"org/a\"\npreload = true\n\
         [models.b]\ncmd = \"s --port ${PORT}\"\n",
    )
    .expect("valid");
    let BackendSettings::Command(a) = &s.models[0].backend else {
        panic!("a command model")
    };
    assert_eq!(a.model_name.as_deref(), Some("org/a"));
    assert!(s.models[0].preload && !s.models[1].preload);
    let BackendSettings::Command(b) = &s.models[1].backend else {
        panic!("a command model")
    };
    assert_eq!(b.model_name, None);
    let e = parse("[models.a]\ncmd = \"s --port ${PORT}\"\napi_key = \"k\"\n")
        .expect_err("api_key on a started server");
    assert!(e.to_string().contains("models.a.api_key"), "{e}");
}

/// Keys as text or as digests (exactly one per key), and policy pins, each problem at its path.
#[test]
fn keys_may_be_digests_and_policy_pins_are_checked() {
    let digest = Sha256Digest::of("sk-a").hex();
    let s = parse(&format!(
        "[auth]\nadmin_key = \"adm\"\nkeys = [{{ key_sha256 = \"{digest}\" }}, {{ key = \"sk-b\" }}]\n\
         [models.a]\ncmd = \"s --port ${{PORT}}\"\n"
    ))
    .expect("valid");
    assert!(s.auth.keys[0].key.matches("sk-a") && !s.auth.keys[0].key.matches(&digest));
    assert!(s.auth.keys[1].key.matches("sk-b"));
    assert!(s.auth.admin_key.as_ref().is_some_and(|k| k.matches("adm")));
    assert!(
        !format!("{:?}", s.auth).contains(&digest),
        "a log never shows a whole digest"
    );
    let e = parse(
        "[auth]\nadmin_key = \"x\"\nadmin_key_sha256 = \"y\"\n\
         keys = [{ key = \"k\", key_sha256 = \"00\" }, { name = \"none\" }, { key_sha256 = \"zz\" }]\n\
         [policies]\nallow = [\"sha256:00\", \"md5:1\"]\n\
         [models.a]\ncmd = \"s --port ${PORT}\"\n",
    )
    .expect_err("five problems")
    .to_string();
    for path in [
        "auth.admin_key_sha256: give admin_key or admin_key_sha256, not both",
        "auth.keys[0].key_sha256: give key or key_sha256, not both",
        "auth.keys[1].key: is missing",
        "auth.keys[2].key_sha256: is not a SHA-256 digest",
        "policies.allow[0]",
        "policies.allow[1]",
    ] {
        assert!(e.contains(path), "{path} in {e}");
    }
    let pinned = parse(&format!(
        "[policies]\nallow = [\"sha256:{digest}\"]\n[models.a]\ncmd = \"s --port ${{PORT}}\"\n"
    ))
    .expect("valid");
    assert_eq!(pinned.policies.allow.map(|a| a.len()), Some(1));
}

/// `max_loaded`: a device's own cap over the scheduler's; 0 would let nothing load, so it is a
/// problem at its key's path.
#[test]
fn max_loaded_per_device_over_the_schedulers_and_never_zero() {
    let s = parse("[scheduler]\nmax_loaded = 3\n[memory.gpu0]\nmax_loaded = 1\n").expect("valid");
    assert_eq!(
        (s.max_loaded("cpu"), s.max_loaded("gpu0")),
        (Some(3), Some(1))
    );
    assert_eq!(parse("").expect("valid").max_loaded("cpu"), None);
    let e = parse("[scheduler]\nmax_loaded = 0\n[memory.cpu]\nmax_loaded = 0\n").expect_err("zero");
    for key in ["scheduler.max_loaded:", "memory.cpu.max_loaded:"] {
        assert!(
            e.problems.iter().any(|p| p.starts_with(key)),
            "{key}: {:?}",
            e.problems
        );
    }
}

#[test]
fn lmstudio_and_vllm_sleep_controls_parse_and_others_are_named() {
    let control = |c: &str| {
        parse(&format!(
            "[models.m]\nurl = \"http://127.0.0.1:1234/v1\"\ncontrol = \"{c}\"\n"
        ))
        .map(|s| match &s.models[0].backend {
            BackendSettings::OpenAi(o) => o.control,
            other => panic!("{other:?}"),
        })
    };
    assert_eq!(control("lmstudio").expect("valid"), Control::LmStudio);
    assert_eq!(
        control("vllm-sleep").expect("valid"),
        Control::VllmSleep { level: 1 }
    );
    assert_eq!(
        control("vllm-sleep:2").expect("valid"),
        Control::VllmSleep { level: 2 }
    );
    let e = control("vllm-sleep:3").expect_err("no level 3");
    assert!(e.problems[0].contains("vllm-sleep:2"), "{:?}", e.problems);
}

#[test]
fn container_models_take_cmd_stop_and_a_container_footprint() {
    let s = parse(
        "[models.q]\ncmd = \"docker run --rm --name qwen -p ${PORT}:8080 img\"\n\
         cmd_stop = \"docker stop qwen\"\nfootprint = \"container:qwen\"\n",
    )
    .expect("valid");
    let BackendSettings::Command(c) = &s.models[0].backend else {
        panic!("a command model")
    };
    assert_eq!(
        c.stop_argv.as_deref(),
        Some(&["docker".to_string(), "stop".into(), "qwen".into()][..])
    );
    assert_eq!(
        c.footprint,
        FootprintSource::Container {
            runtime: "docker".into(),
            name: "qwen".into()
        }
    );
    let e = parse(
        "[models.q]\ncmd = \"s ${PORT}\"\nfootprint = \"cgroup:x\"\n\
         [models.u]\nurl = \"http://127.0.0.1:1/v1\"\ncmd_stop = \"x\"\n",
    )
    .expect_err("two problems");
    assert!(
        e.problems
            .iter()
            .any(|p| p.starts_with("models.q.footprint:")),
        "{:?}",
        e.problems
    );
    assert!(
        e.problems
            .iter()
            .any(|p| p.starts_with("models.u.cmd_stop:")),
        "{:?}",
        e.problems
    );
}
