//! The `twilio` shape: Twilio's Programmable Messaging API (`Messages.json`, for SMS
//! and, with `whatsapp:` addresses, WhatsApp), its Voice API (`Calls.json`, the code
//! read out by TwiML `<Say>`), their answers, and their status callbacks.

use dialgate_sdk::http::form_field;
use dialgate_sdk::messaging::{
    Channel, DeliveryStatus, DeliveryUpdate, Dispatch, HttpRequest, HttpResponse, Message,
    PluginError, SendError,
};
use serde_json::Value;

use crate::{bad_callback, snippet, status_error, text_of, Settings};

/// The request that sends `message`: a form post to the account's `Messages.json`
/// (SMS, WhatsApp) or `Calls.json` (voice), authenticated with the account SID and
/// auth token.
pub fn request(settings: &Settings, message: &Message) -> HttpRequest {
    let voice = message.channel == Channel::Voice;
    let url = format!(
        "{}/2010-04-01/Accounts/{}/{}.json",
        settings.base_url,
        settings.account,
        if voice { "Calls" } else { "Messages" }
    );
    let (to, from) = if message.channel == Channel::Whatsapp {
        (
            format!("whatsapp:{}", message.to),
            format!("whatsapp:{}", settings.sender),
        )
    } else {
        (message.to.clone(), settings.sender.clone())
    };
    let twiml;
    let mut fields = vec![("To", to.as_str()), ("From", from.as_str())];
    if voice {
        twiml = say(&message.body, &message.language);
        fields.push(("Twiml", twiml.as_str()));
    } else {
        fields.push(("Body", message.body.as_str()));
    }
    if let Some(callback) = &settings.callback_url {
        fields.push(("StatusCallback", callback.as_str()));
    }
    HttpRequest::post_form(url, fields)
        .with_header("Accept", "application/json")
        .with_basic_auth(&settings.account, &settings.secret)
}

/// TwiML that reads `text` out twice in `language`, digits one by one.
fn say(text: &str, language: &str) -> String {
    let mut spoken = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        match c {
            '&' => spoken.push_str("&amp;"),
            '<' => spoken.push_str("&lt;"),
            '>' => spoken.push_str("&gt;"),
            '"' => spoken.push_str("&quot;"),
            d if d.is_ascii_digit() => {
                spoken.push(d);
                spoken.push(' ');
            }
            other => spoken.push(other),
        }
    }
    let language: String = language
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    format!(
        "<Response><Say language=\"{language}\">{spoken}</Say><Pause length=\"1\"/><Say language=\"{language}\">{spoken}</Say></Response>"
    )
}

/// A dispatch from a 2xx answer carrying the message's `sid`; otherwise the error
/// Twilio's `{code, message}` body (or the status alone) describes.
pub fn parse_response(response: &HttpResponse) -> Result<Dispatch, SendError> {
    let json: Option<Value> = serde_json::from_slice(&response.body).ok();
    if !response.is_success() {
        let detail = json
            .as_ref()
            .and_then(|body| {
                let message = body.get("message")?.as_str()?;
                Some(match text_of(body.get("code")) {
                    Some(code) => format!("error {code}: {message}"),
                    None => message.to_owned(),
                })
            })
            .or_else(|| snippet(response));
        return Err(status_error("twilio", response.status, detail));
    }
    let sid = json
        .as_ref()
        .and_then(|body| body.get("sid")?.as_str())
        .filter(|sid| !sid.is_empty())
        .ok_or_else(|| {
            SendError::Unavailable(format!(
                "twilio answered HTTP {} without a message `sid`",
                response.status
            ))
        })?;
    let segments = json
        .as_ref()
        .and_then(|body| text_of(body.get("num_segments")))
        .and_then(|segments| segments.parse().ok());
    Ok(Dispatch {
        provider_message_id: sid.to_owned(),
        segments,
    })
}

/// The update in a status callback: a form with `MessageSid` and `MessageStatus` (or
/// the older `SmsSid` and `SmsStatus`) and, for failures, `ErrorCode`. Callbacks about
/// incoming messages (`receiving`, `received`) carry no update.
pub fn parse_callback(request: &HttpRequest) -> Result<Vec<DeliveryUpdate>, PluginError> {
    let fields = request.form();
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|name| form_field(&fields, name))
            .filter(|value| !value.is_empty())
    };
    if let Some(call) = field(&["CallSid"]) {
        // A voice call's status callback: answered and finished means heard.
        let status = match field(&["CallStatus"]).unwrap_or_default() {
            "queued" | "initiated" => DeliveryStatus::Queued,
            "ringing" | "in-progress" => DeliveryStatus::Sent,
            "completed" => DeliveryStatus::Delivered,
            "busy" | "no-answer" | "failed" | "canceled" => DeliveryStatus::Failed,
            other => {
                return Err(bad_callback(format!(
                    "twilio call callback with unknown `CallStatus` `{other}`"
                )))
            }
        };
        let reason = (status == DeliveryStatus::Failed)
            .then(|| field(&["CallStatus"]).map(str::to_owned))
            .flatten();
        return Ok(vec![DeliveryUpdate {
            provider_message_id: call.to_owned(),
            status,
            at_millis: None,
            reason,
        }]);
    }
    let sid = field(&["MessageSid", "SmsSid"])
        .ok_or_else(|| bad_callback("twilio callback without `MessageSid`"))?;
    let status = field(&["MessageStatus", "SmsStatus"])
        .ok_or_else(|| bad_callback("twilio callback without `MessageStatus`"))?;
    let status = match status {
        "accepted" | "scheduled" | "queued" => DeliveryStatus::Queued,
        "sending" | "sent" => DeliveryStatus::Sent,
        "delivered" | "read" => DeliveryStatus::Delivered,
        "undelivered" | "failed" | "canceled" => DeliveryStatus::Failed,
        "receiving" | "received" => return Ok(Vec::new()),
        other => {
            return Err(bad_callback(format!(
                "twilio callback with unknown `MessageStatus` `{other}`"
            )))
        }
    };
    let reason = match status {
        DeliveryStatus::Failed | DeliveryStatus::Expired => {
            field(&["ErrorCode"]).map(str::to_owned)
        }
        _ => None,
    };
    Ok(vec![DeliveryUpdate {
        provider_message_id: sid.to_owned(),
        status,
        at_millis: None,
        reason,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{response, settings_from, TWILIO};
    use crate::{build_request, parse_send_response, Shape};
    use dialgate_sdk::messaging::testing::{callback, message};

    #[test]
    fn the_request_posts_a_form_to_the_accounts_messages() {
        let settings = settings_from(TWILIO).expect("complete");
        let request = build_request(&settings, &message()).expect("sms");
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.url,
            "http://127.0.0.1:9000/2010-04-01/Accounts/AC123/Messages.json"
        );
        assert!(request.has_content_type("application/x-www-form-urlencoded"));
        // "AC123:tok"
        assert_eq!(request.header("Authorization"), Some("Basic QUMxMjM6dG9r"));
        assert_eq!(
            request.text(),
            "To=%2B14155552671&From=%2B15005550006&Body=Your+verification+code+is+123456"
        );
    }

    #[test]
    fn the_status_callback_is_passed_when_set() {
        let mut config = TWILIO.to_vec();
        config.push(("callback_url", "https://dialgate.example/cb?t=1"));
        let settings = settings_from(&config).expect("complete");
        let form = build_request(&settings, &message()).expect("sms").form();
        assert_eq!(
            form_field(&form, "StatusCallback"),
            Some("https://dialgate.example/cb?t=1")
        );
    }

    #[test]
    fn a_created_message_is_a_dispatch() {
        let body = r#"{"sid": "SM0123", "status": "queued", "num_segments": "2",
                       "account_sid": "AC123", "error_code": null}"#;
        let dispatch = parse_send_response(Shape::Twilio, &response(201, body)).expect("sent");
        assert_eq!(dispatch.provider_message_id, "SM0123");
        assert_eq!(dispatch.segments, Some(2));
        let without_segments =
            parse_send_response(Shape::Twilio, &response(201, r#"{"sid":"SM1"}"#)).expect("sent");
        assert_eq!(without_segments.segments, None);
    }

    #[test]
    fn a_success_without_a_sid_is_unavailable() {
        assert!(matches!(
            parse_send_response(Shape::Twilio, &response(201, "{}")),
            Err(SendError::Unavailable(reason)) if reason.contains("sid")
        ));
        assert!(matches!(
            parse_send_response(Shape::Twilio, &response(200, "<html>")),
            Err(SendError::Unavailable(_))
        ));
    }

    #[test]
    fn error_answers_carry_twilios_code_and_message() {
        let body = r#"{"code": 21211, "message": "Invalid 'To' Phone Number",
                       "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#;
        let err = parse_send_response(Shape::Twilio, &response(400, body)).expect_err("refused");
        assert!(matches!(&err, SendError::Rejected(reason)
            if reason == "twilio answered HTTP 400: error 21211: Invalid 'To' Phone Number"));
        let err = parse_send_response(
            Shape::Twilio,
            &response(
                401,
                r#"{"code":20003,"message":"Authenticate","status":401}"#,
            ),
        )
        .expect_err("refused");
        assert!(matches!(err, SendError::Rejected(_)));
        let err = parse_send_response(
            Shape::Twilio,
            &response(429, r#"{"code":20429,"message":"Too Many Requests"}"#),
        )
        .expect_err("busy");
        assert!(matches!(err, SendError::Unavailable(reason) if reason.contains("20429")));
        let err = parse_send_response(Shape::Twilio, &response(503, "")).expect_err("down");
        assert!(
            matches!(err, SendError::Unavailable(reason) if reason == "twilio answered HTTP 503")
        );
    }

    #[test]
    fn status_callbacks_become_updates() {
        let form = "application/x-www-form-urlencoded";
        let cases = [
            ("queued", DeliveryStatus::Queued),
            ("sent", DeliveryStatus::Sent),
            ("delivered", DeliveryStatus::Delivered),
            ("undelivered", DeliveryStatus::Failed),
            ("failed", DeliveryStatus::Failed),
        ];
        for (name, status) in cases {
            let body = format!("AccountSid=AC123&MessageSid=SM0123&MessageStatus={name}");
            let updates = parse_callback(&callback(form, &body)).expect("parsed");
            assert_eq!(updates.len(), 1, "{name}");
            assert_eq!(updates[0].provider_message_id, "SM0123");
            assert_eq!(updates[0].status, status, "{name}");
            assert_eq!(updates[0].reason, None);
            assert_eq!(updates[0].at_millis, None);
        }
    }

    #[test]
    fn failures_carry_the_error_code() {
        let body = "MessageSid=SM9&MessageStatus=undelivered&ErrorCode=30003&SmsSid=SM9";
        let updates =
            parse_callback(&callback("application/x-www-form-urlencoded", body)).expect("parsed");
        assert_eq!(updates[0].status, DeliveryStatus::Failed);
        assert_eq!(updates[0].reason.as_deref(), Some("30003"));
        let delivered = "MessageSid=SM9&MessageStatus=delivered&ErrorCode=";
        let updates = parse_callback(&callback("application/x-www-form-urlencoded", delivered))
            .expect("parsed");
        assert_eq!(updates[0].reason, None);
    }

    #[test]
    fn odd_callbacks_are_errors_or_nothing() {
        let form = "application/x-www-form-urlencoded";
        let err = parse_callback(&callback(form, "MessageStatus=sent")).expect_err("no sid");
        assert_eq!(err.code, "bad-callback");
        let err = parse_callback(&callback(form, "MessageSid=SM1")).expect_err("no status");
        assert_eq!(err.code, "bad-callback");
        let err = parse_callback(&callback(form, "MessageSid=SM1&MessageStatus=teleported"))
            .expect_err("unknown");
        assert!(err.message.contains("teleported"));
        let legacy = parse_callback(&callback(form, "SmsSid=SM2&SmsStatus=sent")).expect("legacy");
        assert_eq!(legacy[0].provider_message_id, "SM2");
        assert!(
            parse_callback(&callback(form, "MessageSid=SM3&MessageStatus=received"))
                .expect("inbound")
                .is_empty()
        );
    }
}
