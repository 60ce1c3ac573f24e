//! The links of one device or module identity ([`Peer`]): each loop translates deliveries into
//! core calls and the core's answers into deliveries, and ends when the link does or when the
//! identity's session ends (detaching with the AMQP condition IoT Hub uses).
//!
//! - telemetry: stored in arrival order; each delivery is accepted once durable (a refused one
//!   is rejected with a condition, which the SDKs report as an error);
//! - cloud-to-device: queued messages within the core's window; accepted = complete, rejected =
//!   reject (dead-lettered), released or modified = abandon (delivered again);
//! - twin: requests in (`GET`, `PATCH /properties/reported`, `PUT`/`DELETE` of the desired
//!   notifications), answers and desired patches out;
//! - methods: calls out, answers in.

use std::sync::Arc;

use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::types::definitions::{self, AmqpError, ErrorCondition, LinkError};
use fe2o3_amqp::types::messaging::{Body, Outcome};
use fe2o3_amqp::types::primitives::Value;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::address::Target;
use super::message::{self, Outgoing};
use super::peer::{OutLink, Peer};
use crate::device_session::TelemetryRefused;
use crate::device_session::revoke::EndReason;

/// An AMQP error with `condition` and `description`.
pub fn error(
    condition: impl Into<ErrorCondition>,
    description: impl Into<String>,
) -> definitions::Error {
    definitions::Error::new(condition, description.into(), None)
}

/// The condition a link of an ended session detaches with: `detach-forced` where the SDKs
/// reconnect (another connection took over, the hub stops), `unauthorized-access` where the
/// identity may no longer connect.
pub fn end_error(why: EndReason) -> definitions::Error {
    let condition: ErrorCondition = match why {
        EndReason::Replaced | EndReason::Shutdown | EndReason::Storage => {
            LinkError::DetachForced.into()
        }
        _ => AmqpError::UnauthorizedAccess.into(),
    };
    error(condition, why.describe())
}

/// Device-to-cloud messages of `target` on `link`.
pub async fn telemetry(peer: Arc<Peer>, target: Target, mut link: Receiver) {
    let disposer = link.disposer();
    let (pending, mut durable) = mpsc::channel::<(DeliveryInfo, durable_log::PendingAppend)>(1024);
    // Accepts each delivery once the log made it durable, in arrival order.
    let settle = tokio::spawn(async move {
        while let Some((info, append)) = durable.recv().await {
            let settled = match append.await {
                Ok(_) => disposer.accept(info).await,
                Err(e) => {
                    warn!(error = %e, "A message could not be stored; released for the device to send again");
                    disposer.release(info).await
                }
            };
            if settled.is_err() {
                break;
            }
        }
    });
    let ended = loop {
        let delivery = tokio::select! {
            d = link.recv::<Body<Value>>() => d,
            why = peer.ended() => break Some(why),
        };
        let delivery = match delivery {
            Ok(d) => d,
            Err(e) => {
                debug!(error = %e, "Telemetry link ended");
                break None;
            }
        };
        let stored = message::telemetry(delivery.message())
            .map_err(TelemetryRefused::Violation)
            .and_then(|(bag, body)| {
                peer.session().send_telemetry(
                    &target.device_id,
                    target.module_id.as_deref(),
                    &bag,
                    &body,
                    false,
                )
            });
        let refusal = match stored {
            Ok(d) => {
                if pending
                    .send((DeliveryInfo::from(&delivery), d.append))
                    .await
                    .is_err()
                {
                    break None;
                }
                continue;
            }
            Err(TelemetryRefused::Dropped(_)) => {
                let _ = link.accept(&delivery).await;
                continue;
            }
            Err(TelemetryRefused::Violation(reason)) => {
                crate::metrics::Metrics::inc(&peer.hub().metrics.protocol_errors);
                warn!(reason = %reason, "Refusing a message");
                let condition: ErrorCondition = if reason.contains("exceeds") {
                    LinkError::MessageSizeExceeded.into()
                } else {
                    AmqpError::NotAllowed.into()
                };
                error(condition, reason)
            }
            Err(TelemetryRefused::Unavailable) => error(
                AmqpError::InternalError,
                "the registry is unavailable; send again later",
            ),
        };
        if link.reject(&delivery, refusal).await.is_err() {
            break None;
        }
    };
    drop(pending);
    let _ = settle.await;
    close_receiver(link, ended).await;
}

async fn close_receiver(link: Receiver, ended: Option<EndReason>) {
    let _ = match ended {
        Some(why) => link.close_with_error(end_error(why)).await,
        None => link.close().await,
    };
}

async fn close_sender(link: Sender, ended: Option<EndReason>) {
    let _ = match ended {
        Some(why) => link.close_with_error(end_error(why)).await,
        None => link.close().await,
    };
}

/// Cloud-to-device messages (a module: input messages) of `target` on `link`.
pub async fn cloud_to_device(peer: Arc<Peer>, target: Target, mut link: Sender) {
    peer.want(|w| w.c2d = true);
    let mut outcomes = FuturesUnordered::new();
    let ended = loop {
        let deliveries = peer.session().c2d_take();
        for d in deliveries {
            let msg = message::cloud_to_device(
                &target.device_id,
                target.module_id.as_deref(),
                &d.message,
            );
            match link.send_batchable(msg).await {
                Ok(fut) => {
                    peer.session().c2d_sent(&d);
                    let tag = d.tag;
                    outcomes.push(async move { (tag, fut.await) });
                }
                Err(e) => {
                    debug!(error = %e, "Cloud-to-device link ended");
                    peer.session().c2d_abandon(d.tag);
                }
            }
        }
        tokio::select! {
            () = peer.c2d_wake.notified() => {}
            Some((tag, outcome)) = outcomes.next(), if !outcomes.is_empty() => settle_c2d(&peer, tag, outcome),
            why = peer.ended() => break Some(why),
            _ = link.on_detach() => break None,
        }
    };
    peer.want(|w| w.c2d = false);
    close_sender(link, ended).await;
    // Unsettled deliveries stay queued: the next session gets them again.
    drop(outcomes);
}

fn settle_c2d(peer: &Peer, tag: u16, outcome: Result<Outcome, fe2o3_amqp::link::SendError>) {
    let mut session = peer.session();
    match outcome {
        Ok(Outcome::Accepted(_)) => {
            session.c2d_complete(tag);
        }
        Ok(Outcome::Rejected(_)) => {
            session.c2d_reject(tag);
        }
        Ok(Outcome::Released(_) | Outcome::Modified(_)) | Err(_) => {
            session.c2d_abandon(tag);
        }
        #[allow(unreachable_patterns)]
        Ok(_) => {
            session.c2d_abandon(tag);
        }
    }
    drop(session);
    peer.c2d_wake.notify_one();
}

/// Twin requests of the identity on `link` (the client sends).
pub async fn twin_requests(peer: Arc<Peer>, mut link: Receiver) {
    let ended = loop {
        let delivery = tokio::select! {
            d = link.recv::<Body<Value>>() => d,
            why = peer.ended() => break Some(why),
        };
        let Ok(delivery) = delivery else { break None };
        let _ = link.accept(&delivery).await;
        let answer = match message::twin_request(delivery.message()) {
            Ok(req) => twin_answer(&peer, req),
            Err(e) => message::twin_response(None, 400, None, e.as_bytes()),
        };
        if !peer.send_out(OutLink::Twin, answer) {
            debug!("Twin answer dropped: no twin link to answer on");
        }
    };
    close_receiver(link, ended).await;
}

fn twin_answer(peer: &Peer, req: message::TwinRequest) -> Outgoing {
    let cid = req.correlation_id.clone();
    let desired = req.resource.as_deref() == Some("/notifications/twin/properties/desired");
    match (req.operation.as_str(), req.resource.as_deref()) {
        ("GET", _) => {
            let r = peer.session().twin_get();
            message::twin_response(cid, r.status, None, r.body.as_bytes())
        }
        ("PATCH", Some("/properties/reported")) => {
            let r = peer.session().twin_patch_reported(&req.body);
            message::twin_response(cid, r.status, r.version, r.body.as_bytes())
        }
        ("PUT", _) if desired => {
            peer.want(|w| w.desired = true);
            message::twin_response(cid, 200, None, b"")
        }
        ("DELETE", _) if desired => {
            peer.want(|w| w.desired = false);
            message::twin_response(cid, 200, None, b"")
        }
        (op, resource) => {
            let body = serde_json::json!({
                "errorCode": 400_004,
                "message": format!("unsupported twin operation {op} {resource:?}"),
            });
            message::twin_response(cid, 400, None, body.to_string().as_bytes())
        }
    }
}

/// Sends what the pump and the request loops queue for the identity's `which` link (twin
/// answers and desired patches, or method calls) on `link` (the client receives).
pub async fn outgoing(peer: Arc<Peer>, which: OutLink, mut link: Sender) {
    let mut queue = peer.open_out(which);
    if let OutLink::Methods = which {
        peer.want(|w| w.methods = true);
    }
    let ended = loop {
        let msg = tokio::select! {
            m = queue.recv() => m,
            why = peer.ended() => break Some(why),
            _ = link.on_detach() => break None,
        };
        let Some(msg) = msg else { break None };
        // The device settles these itself; its outcome changes nothing here.
        if let Err(e) = link.send_batchable(msg).await {
            debug!(error = %e, "Outgoing link ended");
            break None;
        }
    };
    if let OutLink::Methods = which {
        peer.want(|w| w.methods = false);
    }
    close_sender(link, ended).await;
}

/// Direct-method answers of the identity on `link` (the client sends).
pub async fn method_answers(peer: Arc<Peer>, mut link: Receiver) {
    let ended = loop {
        let delivery = tokio::select! {
            d = link.recv::<Body<Value>>() => d,
            why = peer.ended() => break Some(why),
        };
        let Ok(delivery) = delivery else { break None };
        match message::method_response(delivery.message()) {
            Ok(r) => {
                if !peer.session().method_response(&r.rid, r.status, r.payload) {
                    debug!(rid = %r.rid, "Method answer for no waiting call (late or unknown)");
                }
                let _ = link.accept(&delivery).await;
            }
            Err(e) => {
                let _ = link
                    .reject(&delivery, error(AmqpError::InvalidField, e))
                    .await;
            }
        }
    };
    close_receiver(link, ended).await;
}
