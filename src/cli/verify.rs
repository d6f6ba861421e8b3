//! `flexgate verify`: QA's check of a captured SAMLResponse — or of every SAMLResponse in a
//! browser capture (HAR, SAML-tracer export), each with the AuthnRequest it answers.

use super::{bounded, print_json, usage, Failure};
use anyhow::Context;
use flexgate::qa::{Expect, Signed, VerifyRequest, MAX_SKEW_SECS};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// The only certificate trusted for the signature (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// The SP entity id that must be the Audience (e.g. urn:flex:JQ…).
    #[arg(long)]
    audience: Option<String>,
    /// The ACS URL, compared whole (query string included) with Destination and Recipient.
    #[arg(long)]
    recipient: Option<String>,
    /// The IdP entity id the Issuer must equal.
    #[arg(long)]
    issuer: Option<String>,
    /// The AuthnRequest ID the Response must answer.
    #[arg(long, conflicts_with = "idp_initiated")]
    in_response_to: Option<String>,
    /// The Response must carry no InResponseTo (IdP-initiated login).
    #[arg(long)]
    idp_initiated: bool,
    /// Compare with a fixture's .expect.toml (fixtures/README.md) and show the differences.
    #[arg(long)]
    expect: Option<PathBuf>,
    /// Check the time window at this instant (RFC 3339, years 2000 to 2099), e.g. for an old capture.
    #[arg(long, value_parser = flexgate::qa::parse_now)]
    now: Option<chrono::DateTime<chrono::Utc>>,
    /// Clock skew allowed on the time window, in seconds (at most 86400, one day).
    #[arg(long, value_name = "SECS", default_value_t = 0, value_parser = parse_skew)]
    skew: u64,
    /// Which signature(s) must be present (default: either).
    #[arg(long, value_enum)]
    require: Option<Require>,
    /// Accept RSA-SHA1 / SHA-1 (refused by default).
    #[arg(long)]
    allow_sha1: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// The file to read, or - for standard input: a Response (XML, base64, form, saved page), a
    /// HAR file, or a SAML-tracer JSON export.
    #[arg(default_value = "-")]
    input: String,
}

fn parse_skew(s: &str) -> Result<u64, String> {
    let fix = "to check an old capture give --now, not a wider skew";
    bounded(s, 0..=MAX_SKEW_SECS, "seconds", fix)
}

/// `--require`: which signature(s) must be present.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Require {
    Response,
    Assertion,
    Both,
}

impl From<Require> for Signed {
    fn from(r: Require) -> Signed {
        match r {
            Require::Response => Signed::Response,
            Require::Assertion => Signed::Assertion,
            Require::Both => Signed::Both,
        }
    }
}

/// Verifies the input and prints the report; exit 1 when it does not verify (the report says
/// why), 2 when the flags or files cannot be used.
pub fn run(args: Args) -> Result<(), Failure> {
    let cert_pem = std::fs::read(&args.cert)
        .with_context(|| format!("cannot read --cert {}", args.cert.display()))
        .map_err(usage)?;
    let req = VerifyRequest {
        cert_pem,
        cert_name: args.cert.display().to_string(),
        audience: args.audience,
        recipient: args.recipient,
        issuer: args.issuer,
        in_response_to: args.in_response_to,
        idp_initiated: args.idp_initiated,
        expect: args.expect.as_deref().map(read_expect).transpose()?,
        now: args.now,
        skew_secs: args.skew,
        require: args.require.map(Signed::from),
        allow_sha1: args.allow_sha1,
    };
    let text = read_input(&args.input)?;
    let capture = flexgate::capture::read(&text)
        .map_err(|e| usage(anyhow::anyhow!("{}: {e}", args.input)))?;
    if let Some(capture) = capture {
        return verify_capture(&capture, &req, args.json, &args.input);
    }
    let report = flexgate::qa::verify(&text, &req).map_err(usage)?;
    if args.json {
        print_json(&report)?;
    } else {
        print!("{}", flexgate::qa::render(&report));
    }
    if report.valid {
        Ok(())
    } else {
        Err(Failure::reported())
    }
}

/// One capture's Responses, with what each answers.
#[derive(serde::Serialize)]
struct CaptureReport<'a> {
    format: flexgate::capture::Format,
    responses: Vec<Verified<'a>>,
}

#[derive(serde::Serialize)]
struct Verified<'a> {
    entry: usize,
    url: &'a str,
    answers: Option<&'a flexgate::capture::FoundRequest>,
    report: flexgate::qa::VerifyReport,
}

/// Verifies every SAMLResponse the capture holds; exit 1 when any does not verify, 2 when the
/// capture holds none.
fn verify_capture(
    capture: &flexgate::capture::Capture,
    req: &VerifyRequest,
    json: bool,
    input: &str,
) -> Result<(), Failure> {
    if capture.responses.is_empty() {
        return Err(usage(anyhow::anyhow!(
            "{input}: the {:?} capture holds no POST with a SAMLResponse ({} AuthnRequests found)\n  fix: capture the whole login, up to the post to the SP's ACS",
            capture.format,
            capture.requests.len()
        )));
    }
    let mut out = Vec::new();
    for r in &capture.responses {
        let report = flexgate::qa::verify(&r.saml_response, req).map_err(usage)?;
        out.push(Verified {
            entry: r.entry,
            url: &r.url,
            answers: r.answers.as_ref(),
            report,
        });
    }
    let valid = out.iter().all(|v| v.report.valid);
    if json {
        print_json(&CaptureReport {
            format: capture.format,
            responses: out,
        })?;
    } else {
        for (i, v) in out.iter().enumerate() {
            println!(
                "SAMLResponse {} of {} (entry {}, posted to {})",
                i + 1,
                out.len(),
                v.entry,
                v.url
            );
            match v.answers {
                Some(a) => println!(
                    "  answers AuthnRequest {} from {} (entry {}, ACS {})\n{}",
                    a.id,
                    a.issuer,
                    a.entry,
                    a.acs,
                    indent(&flexgate::trace::text::pretty_xml(&a.xml))
                ),
                None => println!("  the AuthnRequest it answers is not in the capture (IdP-initiated, or captured later)"),
            }
            print!("{}", flexgate::qa::render(&v.report));
            println!();
        }
    }
    if valid {
        Ok(())
    } else {
        Err(Failure::reported())
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

fn read_expect(path: &Path) -> Result<(String, Expect), Failure> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --expect {}", path.display()))
        .map_err(usage)?;
    let expect = Expect::parse(&text).map_err(|e| {
        usage(anyhow::anyhow!(
            "{}: {e}\n  fix: see fixtures/README.md for the format",
            path.display()
        ))
    })?;
    Ok((path.display().to_string(), expect))
}

/// The file named, or standard input for `-`.
fn read_input(input: &str) -> Result<String, Failure> {
    if input == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("cannot read standard input")
            .map_err(usage)?;
        Ok(s)
    } else {
        std::fs::read_to_string(input)
            .with_context(|| format!("cannot read {input}"))
            .map_err(usage)
    }
}
