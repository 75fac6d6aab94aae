//! The SFTP front door: SSH listener, authentication, the per-tenant jail, the SFTP request
//! handler and upload-finished events.

pub mod auth;
