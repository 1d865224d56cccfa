//! The `vonage` shape: Vonage's SMS API (`/sms/json`), its answers, and its delivery
//! receipts.
//!
//! The SMS API answers HTTP 200 for most refusals and puts the verdict in each part's
//! `status`: `"0"` is success; throttling (1), internal errors (5), an exhausted
//! balance (9) and too many binds (10) are [`SendError::Unavailable`], bad credentials
//! (4) is [`SendError::BadConfig`], and every other code is [`SendError::Rejected`].
//! A long text is split into parts with an id each; the dispatch names the first part,
//! so receipts for the other parts will not match it.

use chrono::NaiveDateTime;
use dialgate_sdk::http::form_decode;
use dialgate_sdk::messaging::{
    DeliveryStatus, DeliveryUpdate, Dispatch, HttpRequest, HttpResponse, Message, PluginError,
    SendError,
};
use serde_json::Value;

use crate::{bad_callback, snippet, status_error, text_of, Settings};

/// The request that sends `message`: a form post with the key and secret in the body
/// and the recipient without its `+`.
pub fn request(settings: &Settings, message: &Message) -> HttpRequest {
    let url = format!("{}/sms/json", settings.base_url);
    let mut fields = vec![
        ("api_key", settings.account.as_str()),
        ("api_secret", settings.secret.as_str()),
        ("from", settings.sender.as_str()),
        ("to", message.to.trim_start_matches('+')),
        ("text", message.body.as_str()),
    ];
    if let Some(callback) = &settings.callback_url {
        fields.push(("callback", callback.as_str()));
    }
    HttpRequest::post_form(url, fields).with_header("Accept", "application/json")
}

/// A dispatch when every part's `status` is `"0"`; otherwise the first failing part's
/// error, classified as the module documentation says.
pub fn parse_response(response: &HttpResponse) -> Result<Dispatch, SendError> {
    if !response.is_success() {
        return Err(status_error("vonage", response.status, snippet(response)));
    }
    let unreadable = || {
        SendError::Unavailable(format!(
            "vonage answered HTTP {} with no messages",
            response.status
        ))
    };
    let body: Value = serde_json::from_slice(&response.body).map_err(|_| unreadable())?;
    let parts = body
        .get("messages")
        .and_then(Value::as_array)
        .filter(|parts| !parts.is_empty())
        .ok_or_else(unreadable)?;
    for part in parts {
        let status = text_of(part.get("status")).unwrap_or_default();
        if status == "0" {
            continue;
        }
        let text = part
            .get("error-text")
            .and_then(Value::as_str)
            .unwrap_or("no error text");
        let reason = format!("vonage status {status}: {text}");
        return Err(match status.as_str() {
            "1" | "5" | "9" | "10" => SendError::Unavailable(reason),
            "4" => SendError::BadConfig(reason),
            _ => SendError::Rejected(reason),
        });
    }
    let id = parts[0]
        .get("message-id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            SendError::Unavailable("vonage accepted a part without a `message-id`".to_owned())
        })?;
    let segments = text_of(body.get("message-count"))
        .and_then(|count| count.parse().ok())
        .or_else(|| u32::try_from(parts.len()).ok());
    Ok(Dispatch {
        provider_message_id: id.to_owned(),
        segments,
    })
}

/// The update in a delivery receipt, sent as JSON, as a form, or (for `GET` receipts)
/// in the query string. Receipts with the status `unknown` carry no update.
pub fn parse_callback(request: &HttpRequest) -> Result<Vec<DeliveryUpdate>, PluginError> {
    let fields = receipt_fields(request)?;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.is_empty())
    };
    let id =
        field("messageId").ok_or_else(|| bad_callback("vonage receipt without `messageId`"))?;
    let status_name =
        field("status").ok_or_else(|| bad_callback("vonage receipt without `status`"))?;
    let status = match status_name {
        "accepted" | "buffered" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        "expired" => DeliveryStatus::Expired,
        "failed" | "rejected" => DeliveryStatus::Failed,
        "unknown" => return Ok(Vec::new()),
        other => {
            return Err(bad_callback(format!(
                "vonage receipt with unknown `status` `{other}`"
            )))
        }
    };
    let reason = match status {
        DeliveryStatus::Failed | DeliveryStatus::Expired => {
            Some(match field("err-code").filter(|code| *code != "0") {
                Some(code) => format!("{status_name} (err-code {code})"),
                None => status_name.to_owned(),
            })
        }
        _ => None,
    };
    let at_millis = field("message-timestamp").and_then(timestamp_millis);
    Ok(vec![DeliveryUpdate {
        provider_message_id: id.to_owned(),
        status,
        at_millis,
        reason,
    }])
}

/// A receipt's fields as text, from whichever of JSON body, form body or query string
/// carries them.
fn receipt_fields(request: &HttpRequest) -> Result<Vec<(String, String)>, PluginError> {
    let body = request.text();
    let body = body.trim();
    if body.is_empty() {
        let query = request.url.split_once('?').map_or("", |(_, query)| query);
        return Ok(form_decode(query.as_bytes()));
    }
    if request.has_content_type("application/json") || body.starts_with('{') {
        let json: Value = serde_json::from_str(body)
            .map_err(|err| bad_callback(format!("vonage receipt is not JSON: {err}")))?;
        let object = json
            .as_object()
            .ok_or_else(|| bad_callback("vonage receipt is not a JSON object"))?;
        return Ok(object
            .iter()
            .filter_map(|(key, value)| Some((key.clone(), text_of(Some(value))?)))
            .collect());
    }
    Ok(request.form())
}

/// `message-timestamp` (`2020-01-01 12:00:00`, UTC) in milliseconds since the epoch.
fn timestamp_millis(text: &str) -> Option<i64> {
    NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|at| at.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{response, settings_from, VONAGE};
    use crate::{build_request, parse_send_response, Shape};
    use dialgate_sdk::http::form_field;
    use dialgate_sdk::messaging::testing::{callback, message};

    #[test]
    fn the_request_posts_a_form_with_the_credentials() {
        let settings = settings_from(VONAGE).expect("complete");
        let request = build_request(&settings, &message()).expect("sms");
        assert_eq!(request.method, "POST");
        assert_eq!(request.url, "https://rest.example/sms/json");
        assert!(request.has_content_type("application/x-www-form-urlencoded"));
        assert_eq!(request.header("Authorization"), None);
        let form = request.form();
        assert_eq!(form_field(&form, "api_key"), Some("key"));
        assert_eq!(form_field(&form, "api_secret"), Some("sec"));
        assert_eq!(form_field(&form, "from"), Some("Dialgate"));
        assert_eq!(form_field(&form, "to"), Some("14155552671"));
        assert_eq!(
            form_field(&form, "text"),
            Some("Your verification code is 123456")
        );
        assert_eq!(
            form_field(&form, "callback"),
            Some("https://dialgate.example/v1/callbacks/vonage")
        );
    }

    #[test]
    fn an_accepted_message_is_a_dispatch() {
        let body = r#"{"message-count":"1","messages":[{"to":"14155552671",
            "message-id":"0A0000000123ABCD1","status":"0","remaining-balance":"3.14",
            "message-price":"0.0333","network":"12345"}]}"#;
        let dispatch = parse_send_response(Shape::Vonage, &response(200, body)).expect("sent");
        assert_eq!(dispatch.provider_message_id, "0A0000000123ABCD1");
        assert_eq!(dispatch.segments, Some(1));
        let two = r#"{"message-count":"2","messages":[{"message-id":"A","status":"0"},
            {"message-id":"B","status":"0"}]}"#;
        let dispatch = parse_send_response(Shape::Vonage, &response(200, two)).expect("sent");
        assert_eq!(dispatch.provider_message_id, "A");
        assert_eq!(dispatch.segments, Some(2));
    }

    #[test]
    fn refusals_in_the_body_are_classified() {
        let refusal = |status: &str, text: &str| {
            let body = format!(
                r#"{{"message-count":"1","messages":[{{"status":"{status}","error-text":"{text}"}}]}}"#
            );
            parse_send_response(Shape::Vonage, &response(200, &body)).expect_err("refused")
        };
        assert!(matches!(refusal("2", "Missing to param"),
            SendError::Rejected(reason) if reason == "vonage status 2: Missing to param"));
        assert!(matches!(
            refusal("6", "Invalid Message"),
            SendError::Rejected(_)
        ));
        assert!(matches!(
            refusal("1", "Throttled"),
            SendError::Unavailable(_)
        ));
        assert!(matches!(
            refusal("5", "Internal Error"),
            SendError::Unavailable(_)
        ));
        assert!(matches!(
            refusal("9", "Partner quota exceeded"),
            SendError::Unavailable(_)
        ));
        assert!(matches!(
            refusal("4", "Bad Credentials"),
            SendError::BadConfig(_)
        ));
        let later_part = r#"{"message-count":"2","messages":[{"message-id":"A","status":"0"},
            {"status":"7","error-text":"Number barred"}]}"#;
        assert!(matches!(
            parse_send_response(Shape::Vonage, &response(200, later_part)),
            Err(SendError::Rejected(reason)) if reason.contains("barred")
        ));
    }

    #[test]
    fn http_errors_and_unreadable_answers_are_classified() {
        assert!(matches!(
            parse_send_response(Shape::Vonage, &response(401, r#"{"error":"bad key"}"#)),
            Err(SendError::Rejected(reason)) if reason.contains("401") && reason.contains("bad key")
        ));
        assert!(matches!(
            parse_send_response(Shape::Vonage, &response(429, "")),
            Err(SendError::Unavailable(_))
        ));
        assert!(matches!(
            parse_send_response(Shape::Vonage, &response(502, "Bad Gateway")),
            Err(SendError::Unavailable(_))
        ));
        for body in ["", "{}", r#"{"messages":[]}"#, "not json"] {
            assert!(
                matches!(
                    parse_send_response(Shape::Vonage, &response(200, body)),
                    Err(SendError::Unavailable(_))
                ),
                "{body:?}"
            );
        }
        assert!(matches!(
            parse_send_response(Shape::Vonage, &response(200, r#"{"messages":[{"status":"0"}]}"#)),
            Err(SendError::Unavailable(reason)) if reason.contains("message-id")
        ));
    }

    #[test]
    fn json_receipts_become_updates() {
        let body = r#"{"msisdn":"14155552671","to":"Dialgate","network-code":"12345",
            "messageId":"0A0000000123ABCD1","price":"0.0333","status":"delivered",
            "scts":"2001011400","err-code":"0","message-timestamp":"2020-01-01 12:00:00"}"#;
        let updates = parse_callback(&callback("application/json", body)).expect("parsed");
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].provider_message_id, "0A0000000123ABCD1");
        assert_eq!(updates[0].status, DeliveryStatus::Delivered);
        assert_eq!(updates[0].at_millis, Some(1_577_880_000_000));
        assert_eq!(updates[0].reason, None);
    }

    #[test]
    fn form_and_query_receipts_become_updates() {
        let body =
            "messageId=X1&status=failed&err-code=6&message-timestamp=2020-01-01+12%3A00%3A00";
        let updates =
            parse_callback(&callback("application/x-www-form-urlencoded", body)).expect("parsed");
        assert_eq!(updates[0].status, DeliveryStatus::Failed);
        assert_eq!(updates[0].reason.as_deref(), Some("failed (err-code 6)"));
        assert_eq!(updates[0].at_millis, Some(1_577_880_000_000));

        let mut get = callback("text/plain", "");
        get.method = "GET".to_owned();
        get.url = "/v1/callbacks/vonage?messageId=X2&status=expired&err-code=0".to_owned();
        let updates = parse_callback(&get).expect("parsed");
        assert_eq!(updates[0].provider_message_id, "X2");
        assert_eq!(updates[0].status, DeliveryStatus::Expired);
        assert_eq!(updates[0].reason.as_deref(), Some("expired"));
        assert_eq!(updates[0].at_millis, None);
    }

    #[test]
    fn every_receipt_status_is_mapped() {
        let cases = [
            ("accepted", Some(DeliveryStatus::Sent)),
            ("buffered", Some(DeliveryStatus::Sent)),
            ("delivered", Some(DeliveryStatus::Delivered)),
            ("expired", Some(DeliveryStatus::Expired)),
            ("failed", Some(DeliveryStatus::Failed)),
            ("rejected", Some(DeliveryStatus::Failed)),
            ("unknown", None),
        ];
        for (name, status) in cases {
            let body = format!(r#"{{"messageId":"M","status":"{name}","err-code":4}}"#);
            let updates = parse_callback(&callback("application/json", &body)).expect("parsed");
            assert_eq!(updates.first().map(|u| u.status), status, "{name}");
        }
    }

    #[test]
    fn odd_receipts_are_errors() {
        for body in [
            r#"{"status":"delivered"}"#,
            r#"{"messageId":"M"}"#,
            r#"{"messageId":"M","status":"teleported"}"#,
            r#"{"messageId":"M","#,
            "[1,2]",
        ] {
            let err = parse_callback(&callback("application/json", body)).expect_err("odd");
            assert_eq!(err.code, "bad-callback", "{body}");
        }
        assert_eq!(timestamp_millis("yesterday"), None);
    }
}
