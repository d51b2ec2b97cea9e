use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn import(yaml: &str) -> Imported {
    llama_swap(yaml, &no_env).unwrap_or_else(|e| panic!("{e}"))
}

fn table(im: &Imported) -> toml::Table {
    im.toml
        .parse()
        .unwrap_or_else(|e| panic!("{e}\n{}", im.toml))
}

fn warned(im: &Imported, path: &str) -> bool {
    im.warnings.iter().any(|w| w.path == path)
}

#[test]
fn a_minimal_model_carries_with_nothing_to_warn() {
    let im = import("models:\n  m:\n    cmd: llama-server --port ${PORT} -m x.gguf\n");
    assert!(im.warnings.is_empty(), "{:?}", im.warnings);
    assert_eq!(
        table(&im)["models"]["m"]["cmd"].as_str(),
        Some("llama-server --port ${PORT} -m x.gguf")
    );
    assert!(im.toml.contains("# Everything carried over."));
}

#[test]
fn macros_expand_in_order_model_macros_override_and_env_comes_from_the_lookup() {
    let yaml = r#"
macros:
  server: "llama-server --port ${PORT}"
  ctx: 4096
  args: "--ctx-size ${ctx}"
  dir: "${env.MODELS}"
models:
  a:
    cmd: ${server} -m ${dir}/a.gguf ${args} --alias ${MODEL_ID}
  b:
    macros:
      ctx: 8192
      args: "--ctx-size ${ctx}"
    cmd: |
      # a comment line llama-swap drops
      ${server}
      -m ${dir}/b.gguf ${args} ${nope}
"#;
    let env = |v: &str| (v == "MODELS").then(|| "/m".to_string());
    let im = llama_swap(yaml, &env).unwrap();
    let t = table(&im);
    assert_eq!(
        t["models"]["a"]["cmd"].as_str(),
        Some("llama-server --port ${PORT} -m /m/a.gguf --ctx-size 4096 --alias ${MODEL}")
    );
    assert_eq!(
        t["models"]["b"]["cmd"].as_str(),
        Some("llama-server --port ${PORT} -m /m/b.gguf --ctx-size 8192 ${nope}")
    );
    assert_eq!(t["models"]["a"]["context_tokens"].as_integer(), Some(4096));
    assert_eq!(t["models"]["b"]["context_tokens"].as_integer(), Some(8192));
    assert!(warned(&im, "models.b.cmd"), "{:?}", im.warnings);
    assert_eq!(im.warnings.len(), 1, "{:?}", im.warnings);
}

#[test]
fn an_unset_environment_variable_fails_the_import_naming_it_and_where() {
    let yaml =
        "apiKeys: [\"${env.KEY_A}\"]\nmodels:\n  m:\n    cmd: s --port ${PORT} ${env.KEY_B}\n";
    match llama_swap(yaml, &no_env) {
        Err(ImportError::Env(vars)) => {
            assert_eq!(vars, ["KEY_A (at apiKeys[0])", "KEY_B (at models.m.cmd)"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_yaml_and_a_file_without_models_are_errors_not_empty_configs() {
    assert!(matches!(
        llama_swap("models: [", &no_env),
        Err(ImportError::Yaml(_))
    ));
    assert!(matches!(
        llama_swap("- a\n- b\n", &no_env),
        Err(ImportError::Shape(_))
    ));
    assert!(matches!(
        llama_swap("logLevel: info\n", &no_env),
        Err(ImportError::Shape(_))
    ));
}

#[test]
fn ttl_follows_the_model_then_global_ttl_and_zero_means_never() {
    let yaml = "globalTTL: 300\nmodels:\n  own:\n    cmd: s --port ${PORT}\n    ttl: 60\n  \
                inherits:\n    cmd: s --port ${PORT}\n  minus:\n    cmd: s --port ${PORT}\n    ttl: -1\n  \
                never:\n    cmd: s --port ${PORT}\n    ttl: 0\n";
    let t = table(&import(yaml));
    let ttl = |m: &str| t["models"][m].get("ttl").and_then(toml::Value::as_integer);
    assert_eq!(ttl("own"), Some(60));
    assert_eq!(ttl("inherits"), Some(300));
    assert_eq!(ttl("minus"), Some(300));
    assert_eq!(ttl("never"), None);
}

#[test]
fn aliases_env_health_name_and_slots_carry_over() {
    let yaml = r#"
healthCheckTimeout: 5
models:
  m:
    cmd: llama-server --port ${PORT} -c 8192 -np 2
    aliases:
      - plain
      - id: fancy
        name: fancy
    env: ["A=1", "B=x=y", "broken"]
    checkEndpoint: /ready
    useModelName: upstream-name
    concurrencyLimit: 3
    unloadTimeout: 7
"#;
    let im = import(yaml);
    let m = &table(&im)["models"]["m"];
    assert_eq!(m["aliases"].as_array().unwrap().len(), 2);
    assert_eq!(m["aliases"][1].as_str(), Some("fancy"));
    assert_eq!(m["env"]["A"].as_str(), Some("1"));
    assert_eq!(m["env"]["B"].as_str(), Some("x=y"));
    assert_eq!(m["health"].as_str(), Some("/ready"));
    assert_eq!(m["use_model_name"].as_str(), Some("upstream-name"));
    // concurrencyLimit is the limit llama-swap enforces; it wins over the server's -np.
    assert_eq!(m["parallel"].as_integer(), Some(3));
    assert_eq!(m["context_tokens"].as_integer(), Some(4096));
    assert_eq!(m["stop_timeout"].as_integer(), Some(7));
    // llama-swap's floor of 15 s.
    assert_eq!(m["start_timeout"].as_integer(), Some(15));
    assert_eq!(
        im.warnings
            .iter()
            .map(|w| w.path.as_str())
            .collect::<Vec<_>>(),
        ["models.m.env[2]"]
    );
}

#[test]
fn what_has_no_equivalent_is_warned_with_its_path() {
    let yaml = r#"
startPort: 5800
models:
  m:
    cmd: s --port ${PORT}
    cmdStop: docker stop m
    unlisted: true
    proxy: http://127.0.0.1:9999
    checkEndpoint: none
    filters: {stripParams: "top_k"}
    metadata: {a: 1}
    name: M
    somethingNew: 1
  fixed:
    cmd: s --port 9000
"#;
    let im = import(yaml);
    for path in [
        "startPort",
        "models.m.cmdStop",
        "models.m.unlisted",
        "models.m.proxy",
        "models.m.checkEndpoint",
        "models.m.filters",
        "models.m.metadata",
        "models.m.name",
        "models.m.somethingNew",
        "models.fixed.cmd",
    ] {
        assert!(
            warned(&im, path),
            "no warning for {path}: {:?}",
            im.warnings
        );
        assert!(
            im.toml.contains(&format!("# - {path}: ")),
            "{path} not in the header"
        );
    }
    let t = table(&im);
    assert!(
        t["models"].get("fixed").is_none(),
        "a cmd without ${{PORT}} cannot serve"
    );
    assert!(t["models"]["m"].get("health").is_none());
}

#[test]
fn api_keys_become_auth_keys_and_one_from_the_environment_says_it_is_now_in_the_file() {
    let env = |v: &str| (v == "K").then(|| "sk-env".to_string());
    let im = llama_swap("apiKeys: [sk-a, \"${env.K}\"]\nmodels: {}\n", &env).unwrap();
    let keys = table(&im)["auth"]["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["key"].as_str(), Some("sk-a"));
    assert_eq!(keys[1]["key"].as_str(), Some("sk-env"));
    assert!(warned(&im, "apiKeys[1]") && !warned(&im, "apiKeys[0]"));
}

const THREE: &str = "models:\n  a:\n    cmd: s --port ${PORT}\n  b:\n    cmd: s --port ${PORT}\n  \
                     c:\n    cmd: s --port ${PORT}\n";

#[test]
fn a_persistent_group_pins_its_members_and_swap_and_exclusive_are_warned() {
    let yaml = format!(
        "{THREE}groups:\n  one:\n    members: [a, b]\n  keep:\n    persistent: true\n    \
         swap: false\n    exclusive: false\n    members: [c, ghost]\n"
    );
    let im = import(&yaml);
    let t = table(&im);
    assert_eq!(t["models"]["c"]["pinned"].as_bool(), Some(true));
    assert!(t["models"]["a"].get("pinned").is_none());
    assert!(warned(&im, "groups.one.swap") && warned(&im, "groups.one.exclusive"));
    assert!(!warned(&im, "groups.keep.swap") && !warned(&im, "groups.keep.exclusive"));
    assert!(warned(&im, "groups.keep.members"), "ghost is not a model");
}

#[test]
fn matrix_evict_costs_become_priorities_and_its_sets_are_warned() {
    let yaml = format!(
        "{THREE}matrix:\n  vars: {{x: a}}\n  evict_costs: {{x: 50, b: 30, zz: 1}}\n  sets: {{s: \"x & b\"}}\n"
    );
    let im = import(&yaml);
    let t = table(&im);
    assert_eq!(t["models"]["a"]["priority"].as_integer(), Some(50));
    assert_eq!(t["models"]["b"]["priority"].as_integer(), Some(30));
    assert!(warned(&im, "matrix.sets") && warned(&im, "matrix.evict_costs.zz"));
    assert!(
        warned(&im, "matrix.evict_costs"),
        "says only the priority policy honours them"
    );
}

#[test]
fn startup_preload_marks_models_and_an_unknown_one_is_warned() {
    let yaml = format!("{THREE}hooks:\n  on_startup:\n    preload: [b, nope]\n");
    let im = import(&yaml);
    let t = table(&im);
    assert_eq!(t["models"]["b"]["preload"].as_bool(), Some(true));
    assert!(t["models"]["a"].get("preload").is_none());
    assert!(warned(&im, "hooks.on_startup.preload[1]"));
}

#[test]
fn http_peers_become_url_models_and_https_ones_are_warned_not_carried() {
    let yaml = "models: {}\npeers:\n  lan:\n    proxy: http://10.0.0.2:8080/\n    apiKey: k\n    \
                models: [p1, p2]\n  cloud:\n    proxy: https://example.invalid/api\n    models: [c1]\n";
    let im = import(yaml);
    let t = table(&im);
    assert_eq!(
        t["models"]["p1"]["url"].as_str(),
        Some("http://10.0.0.2:8080/v1")
    );
    assert_eq!(t["models"]["p2"]["api_key"].as_str(), Some("k"));
    assert!(t["models"].get("c1").is_none());
    assert!(warned(&im, "peers.cloud.proxy"));
}

/// llama-swap's own examples (tests/data/llama-swap): everything in them is carried or
/// warned, and what is written checks as `serve` would check it.
#[test]
fn llama_swaps_own_example_configs_import_and_check() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/llama-swap");
    let env = |v: &str| Some(format!("env-{v}"));
    for (file, expect_models, expect_warned) in [
        (
            "config.example.yaml",
            &[
                "gpt-oss-120b",
                "docker-llama",
                "model_a",
                "model_b",
                "embeddings/model_c",
            ][..],
            &[
                "models.gpt-oss-120b.proxy",
                "models.gpt-oss-120b.filters",
                "models.docker-llama.cmdStop",
                "models.unlisted-model.cmd",
                "routing.router.settings.groups.group1.swap",
                "routing.router.settings.matrix.sets",
                "hooks.on_startup.preload[0]",
                "peers.openrouter.proxy",
                "selectors",
                "apiKeys[2]",
            ][..],
        ),
        (
            "config.groups.example.yaml",
            &["gpt-oss-120b", "qwen-unlisted", "docker-llama", "model_a"][..],
            &[
                "groups.group1.swap",
                "groups.group1.members",
                "models.gpt-oss-120b.filters",
                "models.docker-llama.cmdStop",
            ][..],
        ),
    ] {
        let yaml = std::fs::read_to_string(data.join(file)).unwrap();
        let im = llama_swap(&yaml, &env).unwrap_or_else(|e| panic!("{file}: {e}"));
        let t = table(&im);
        let cmd = t["models"]["gpt-oss-120b"]["cmd"].as_str().unwrap();
        assert!(
            cmd.starts_with("/path/to/llama-server/llama-server-ec9e0301 --port ${PORT} --model")
                && !cmd.contains('\n'),
            "{file}: the folded macro and the comment line: {cmd:?}"
        );
        for id in expect_models {
            assert!(
                t["models"].get(*id).is_some(),
                "{file}: {id} missing\n{}",
                im.toml
            );
        }
        for path in expect_warned {
            assert!(
                warned(&im, path),
                "{file}: no warning at {path}: {:#?}",
                im.warnings
            );
        }
        let settings = Settings::from_toml(&im.toml, &data, file)
            .unwrap_or_else(|e| panic!("{file} imported does not check:\n{e}\n{}", im.toml));
        assert_eq!(settings.models.len(), t["models"].as_table().unwrap().len());
        assert_eq!(settings.auth.keys.len(), 4, "{file}");
    }
}
