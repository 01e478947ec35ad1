//! What a command needs before it sends anything: the settings resolved and checked, the
//! price table, a client for the gateway (or a fresh in-process mock), and what earlier runs
//! say about output lengths.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};

use super::Global;
use crate::cli::{GatewayArgs, JobArgs, MockArgs, SendArgs};
use crate::client::{Client, Timeouts};
use crate::jobs::{Defaults, InputFormat, LoadOptions};
use crate::mock::{MockConfig, MockServer};
use crate::pricing::PriceTable;
use crate::settings::{ApiKey, ConfigFile, Gateway, RunSettings, SendSettings, resolve_gateway};
use crate::store::Store;

/// Resolves what a run (or an estimate) of a job file would use, checking everything that can
/// be checked before the database is touched: the gateway and its key (only when `sends`: a
/// command that sends nothing needs none), prices, sending options, the template and the file.
pub fn plan(
    global: &Global,
    jobs: &JobArgs,
    gateway: &GatewayArgs,
    mock: &MockArgs,
    sending: &SendArgs,
    sends: bool,
) -> anyhow::Result<(RunSettings, LoadOptions, Option<ApiKey>)> {
    let mock = mock.options();
    if let Some(options) = &mock {
        options.config(crate::cli::MOCK_FLAGS)?;
    }
    let gateway = if mock.is_some() {
        // The address is the session's own; what is stored is only that it was the mock.
        Gateway {
            prices: gateway.prices.clone(),
            ..Gateway::mock("mock://in-process".to_owned())
        }
    } else {
        let (config, config_path) = ConfigFile::load(global.config.as_deref())?;
        resolve_gateway(gateway, &config, config_path.as_deref())?
    };
    let key = if sends { gateway.api_key()? } else { None };
    check_gateway(&gateway, key.as_ref())?;
    prices_for(&gateway)?;
    let mut send = SendSettings::from_args(sending)?;
    send.rpm = send.rpm.or(gateway.limits.rpm);
    send.itpm = send.itpm.or(gateway.limits.itpm);
    send.otpm = send.otpm.or(gateway.limits.otpm);
    let prompt_template = jobs
        .prompt_template
        .as_deref()
        .map(|path| {
            crate::textfile::read(path, crate::textfile::MAX_TEMPLATE_BYTES)
                .with_context(|| format!("failed to read the prompt template {}", path.display()))
        })
        .transpose()?;
    crate::jobs::check_readable(&jobs.file)?;
    let settings = RunSettings {
        gateway,
        send,
        mock,
        models: jobs.models.clone(),
        repeat: jobs.repeat,
        defaults: Defaults {
            model: jobs.model.clone(),
            max_tokens: jobs.max_tokens,
            system: jobs.system.clone(),
            temperature: jobs.temperature,
            stream: jobs.stream,
        },
        input: None,
    };
    let options = LoadOptions {
        format: InputFormat::with_delimiter(&jobs.file, jobs.delimiter),
        path: jobs.file.clone(),
        defaults: settings.defaults.clone(),
        models: settings.models.clone(),
        repeat: settings.repeat,
        prompt_template,
        expect_kind: match jobs.expect_mode {
            crate::cli::ExpectMode::Equals => "equals",
            crate::cli::ExpectMode::Contains => "contains",
            crate::cli::ExpectMode::Regex => "regex",
        },
        skip_invalid: false,
    };
    Ok((settings, options, key))
}

/// The model of `prices` (by id or alias) nearest to `model` by edit distance, when it is near
/// enough to be what was meant: a typo such as `claude-sonet-4-6`, not another model.
pub fn closest_model(prices: &PriceTable, model: &str) -> Option<String> {
    let limit = (model.chars().count() / 4).clamp(1, 3);
    prices
        .entries()
        .iter()
        .flat_map(|entry| std::iter::once(&entry.model).chain(&entry.aliases))
        .map(|known| (strsim::levenshtein(model, known), known))
        .filter(|(distance, _)| *distance <= limit)
        .min()
        .map(|(_, known)| known.clone())
}

/// Checks that requests to `gateway` can be made (its URL, its header names and values, the
/// key's characters) before a run is created or changed: found only when sending starts, a
/// bad one would leave a run that cannot send.
pub fn check_gateway(gateway: &Gateway, key: Option<&ApiKey>) -> anyhow::Result<()> {
    let base = &gateway.base_url;
    if let Some(cut) = base.find(['?', '#']) {
        // What follows the cut may be a key: it is not shown.
        bail!(
            "the gateway's base URL `{}…` has a query or a fragment, which the messages path \
             would be appended to; give the gateway's credentials as a header (--header, or \
             `headers` in its profile) and the path with --messages-path",
            crate::output::redacted_url(&base[..cut])
        );
    }
    let url = gateway.messages_url();
    reqwest::Url::parse(&url).with_context(|| {
        format!(
            "the gateway's messages URL `{}` is not a valid URL",
            crate::output::redacted_url(&url)
        )
    })?;
    Client::new(
        gateway.endpoint(),
        key.cloned(),
        Timeouts {
            total: Duration::from_secs(1),
            stream_idle: Duration::from_secs(1),
        },
        1,
    )?;
    Ok(())
}

pub fn prices_for(gateway: &Gateway) -> anyhow::Result<PriceTable> {
    Ok(match &gateway.prices {
        Some(path) => PriceTable::from_file(path)?,
        None => PriceTable::builtin(),
    })
}

/// The client for a run's gateway, starting a fresh in-process mock for a mock run (kept
/// alive by the returned handle).
pub async fn connect(
    settings: &RunSettings,
    key: Option<ApiKey>,
) -> anyhow::Result<(Option<MockServer>, Client)> {
    let mock = match &settings.mock {
        Some(mock) => Some(
            MockServer::start(MockConfig {
                // A price file given with --mock names the models of the gateway it stands for.
                models: match &settings.gateway.prices {
                    Some(path) => PriceTable::from_file(path)?
                        .entries()
                        .iter()
                        .flat_map(|e| std::iter::once(e.model.clone()).chain(e.aliases.clone()))
                        .collect(),
                    None => Vec::new(),
                },
                ..mock.config(crate::cli::MOCK_FLAGS)?
            })
            .await
            .context("failed to start the mock gateway")?,
        ),
        None => None,
    };
    let gateway = match &mock {
        Some(server) => Gateway::mock(server.base_url()),
        None => settings.gateway.clone(),
    };
    let client = Client::new(
        gateway.endpoint(),
        key,
        Timeouts {
            total: settings.send.timeout,
            stream_idle: settings.send.stream_idle_timeout,
        },
        settings.send.concurrency,
    )?
    .with_max_answer_bytes(settings.send.max_answer_bytes);
    Ok((mock, client))
}

/// Mean output tokens per model over the earlier results in the database, if there is one.
pub async fn mean_output(
    db: &crate::store::Location,
) -> anyhow::Result<HashMap<String, (f64, i64)>> {
    if !db.exists() {
        return Ok(HashMap::new());
    }
    let store = Store::open(db).await?;
    let means = store.mean_output_by_model().await;
    store.close().await;
    Ok(means?
        .into_iter()
        .map(|(model, mean, n)| (model, (mean, n)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_in_a_model_name_finds_the_model_and_another_name_finds_none() {
        let prices = PriceTable::builtin();
        assert_eq!(
            closest_model(&prices, "claude-sonet-4-6").as_deref(),
            Some("claude-sonnet-4-6")
        );
        assert_eq!(
            closest_model(&prices, "claude-haiku-4.5").as_deref(),
            Some("claude-haiku-4-5")
        );
        assert_eq!(closest_model(&prices, "claude-nova-9"), None);
        assert_eq!(closest_model(&prices, "gpt-4o-mini"), None);
    }

    #[test]
    fn a_messages_url_that_cannot_be_parsed_is_shown_without_its_credentials() {
        let mut gateway = Gateway::mock("https://user:sk-secret-0451@gw example".to_owned());
        gateway.name = "custom".to_owned();
        let error = format!("{:#}", check_gateway(&gateway, None).unwrap_err());
        assert!(error.contains("is not a valid URL"), "{error}");
        assert!(error.contains("https://***@gw example"), "{error}");
        assert!(!error.contains("sk-secret-0451"), "{error}");
    }

    #[test]
    fn a_base_url_with_a_query_is_refused_without_showing_its_key() {
        for base in [
            "https://gw.example/?api_key=sk-secret-0451",
            "https://gw.example/v1#token=sk-secret-0451",
        ] {
            let mut gateway = Gateway::mock(base.to_owned());
            gateway.name = "custom".to_owned();
            let error = format!("{:#}", check_gateway(&gateway, None).unwrap_err());
            assert!(error.contains("has a query or a fragment"), "{error}");
            assert!(!error.contains("sk-secret-0451"), "{error}");
        }
    }
}
