//! Notification mail: composing run reports and delivering them (lettre), retried from the outbox.
//! (Being built; see issue 4.)
