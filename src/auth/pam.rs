//! PAM login against the system's users: a small libpam binding (start, authenticate,
//! account check, end) with a conversation that answers the password prompt. Each attempt
//! uses its own handle and runs on a blocking thread; failed attempts sleep inside libpam.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr;

use crate::config::Config;
use crate::privileged::protocol;

use super::{Authenticated, Error};

const PAM_SUCCESS: c_int = 0;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;
const PAM_BUF_ERR: c_int = 5;
const PAM_CONV_ERR: c_int = 19;
const PAM_DISALLOW_NULL_AUTHTOK: c_int = 0x0001;

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

#[repr(C)]
struct PamConv {
    conv: extern "C" fn(c_int, *mut *const PamMessage, *mut *mut PamResponse, *mut c_void) -> c_int,
    appdata_ptr: *mut c_void,
}

#[repr(C)]
struct PamHandle {
    _private: [u8; 0],
}

// Linked by soname so that building needs only libpam0g (always installed), not libpam0g-dev.
#[link(name = "libpam.so.0", kind = "dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    fn pam_start(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        handle: *mut *mut PamHandle,
    ) -> c_int;
    fn pam_authenticate(handle: *mut PamHandle, flags: c_int) -> c_int;
    fn pam_acct_mgmt(handle: *mut PamHandle, flags: c_int) -> c_int;
    fn pam_end(handle: *mut PamHandle, status: c_int) -> c_int;
    fn pam_strerror(handle: *mut PamHandle, errnum: c_int) -> *const c_char;
}

/// What the conversation answers: the user name when echo is on, the password when off.
struct Answers {
    user: CString,
    password: CString,
}

extern "C" fn conversation(
    count: c_int,
    messages: *mut *const PamMessage,
    responses: *mut *mut PamResponse,
    data: *mut c_void,
) -> c_int {
    if count <= 0 || messages.is_null() || responses.is_null() || data.is_null() {
        return PAM_CONV_ERR;
    }
    let count = count as usize;
    // SAFETY: libpam frees the response array and each string with free(), so both come from
    // calloc/strdup. `data` is the `Answers` we passed to pam_start, alive for the whole call.
    unsafe {
        let answers = &*(data as *const Answers);
        let replies = libc::calloc(count, std::mem::size_of::<PamResponse>()) as *mut PamResponse;
        if replies.is_null() {
            return PAM_BUF_ERR;
        }
        for i in 0..count {
            // Linux-PAM passes an array of pointers to messages.
            let message = *messages.add(i);
            if message.is_null() {
                libc::free(replies as *mut c_void);
                return PAM_CONV_ERR;
            }
            let reply = &mut *replies.add(i);
            match (*message).msg_style {
                PAM_PROMPT_ECHO_OFF => reply.resp = libc::strdup(answers.password.as_ptr()),
                PAM_PROMPT_ECHO_ON => reply.resp = libc::strdup(answers.user.as_ptr()),
                PAM_ERROR_MSG | PAM_TEXT_INFO => reply.resp = ptr::null_mut(),
                _ => {
                    for j in 0..i {
                        libc::free((*replies.add(j)).resp as *mut c_void);
                    }
                    libc::free(replies as *mut c_void);
                    return PAM_CONV_ERR;
                }
            }
        }
        *responses = replies;
    }
    PAM_SUCCESS
}

fn describe(handle: *mut PamHandle, code: c_int) -> String {
    // SAFETY: pam_strerror returns a static string for any code; the handle may be null.
    unsafe {
        let text = pam_strerror(handle, code);
        if text.is_null() {
            format!("PAM error {code}")
        } else {
            CStr::from_ptr(text).to_string_lossy().into_owned()
        }
    }
}

/// Check `user`'s `password` with PAM service `service`. `Ok(false)` means wrong credentials
/// (or an account PAM refuses); `Err` means PAM itself failed. Blocking.
pub fn authenticate(
    service: &str,
    user: &str,
    password: &str,
    check_account: bool,
) -> Result<bool, Error> {
    let nul = |what| Error::Pam(format!("{what} contains a NUL byte"));
    let service = CString::new(service).map_err(|_| nul("the service name"))?;
    let answers = Box::new(Answers {
        user: CString::new(user).map_err(|_| nul("the user name"))?,
        password: CString::new(password).map_err(|_| nul("the password"))?,
    });
    let conv = PamConv {
        conv: conversation,
        appdata_ptr: &*answers as *const Answers as *mut c_void,
    };
    let mut handle: *mut PamHandle = ptr::null_mut();
    // SAFETY: all pointers are valid C strings or structs that outlive the PAM transaction,
    // which ends with pam_end below on every path after a successful pam_start.
    unsafe {
        let code = pam_start(service.as_ptr(), answers.user.as_ptr(), &conv, &mut handle);
        if code != PAM_SUCCESS {
            return Err(Error::Pam(format!(
                "pam_start failed: {}",
                describe(handle, code)
            )));
        }
        let mut code = pam_authenticate(handle, PAM_DISALLOW_NULL_AUTHTOK);
        if code == PAM_SUCCESS && check_account {
            code = pam_acct_mgmt(handle, PAM_DISALLOW_NULL_AUTHTOK);
        }
        let ok = code == PAM_SUCCESS;
        if !ok {
            tracing::info!(user, reason = %describe(handle, code), "PAM refused the login");
        }
        pam_end(handle, code);
        Ok(ok)
    }
}

/// The `pam` authenticator (upstream's PAMAuthenticator, the default).
pub struct Pam {
    service: String,
    check_account: bool,
    admin_groups: Vec<String>,
    allowed_groups: Vec<String>,
    /// Where an unprivileged hub asks the root helper (pam_unix cannot check other users'
    /// passwords without root or the shadow group).
    helper_socket: std::path::PathBuf,
}

impl Pam {
    pub fn from_config(config: &Config) -> Pam {
        Pam {
            service: config.pam.service.clone(),
            check_account: config.pam.check_account,
            admin_groups: config.pam.admin_groups.clone(),
            allowed_groups: config.pam.allowed_groups.clone(),
            helper_socket: config.systemd_spawner.helper_socket.clone(),
        }
    }
}

/// The system groups of a user (primary and supplementary).
fn system_groups(user: &str) -> Vec<String> {
    let Ok(Some(account)) = nix::unistd::User::from_name(user) else {
        return Vec::new();
    };
    let Ok(name) = CString::new(user) else {
        return Vec::new();
    };
    nix::unistd::getgrouplist(&name, account.gid)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|gid| {
            nix::unistd::Group::from_gid(gid)
                .ok()
                .flatten()
                .map(|g| g.name)
        })
        .collect()
}

#[async_trait::async_trait]
impl super::Authenticator for Pam {
    fn name(&self) -> &'static str {
        "pam"
    }

    // PAM only admits real accounts; an empty allow list lets any of them in (as
    // JupyterHub 4 did; see `Policy::from_config`).
    fn allows_all_by_default(&self) -> bool {
        true
    }

    /// As upstream's `LocalAuthenticator.add_user`: a PAM user needs their system account.
    fn check_existing_user(&self, name: &str) -> Result<(), String> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(format!("system user {name:?} does not exist")),
            // The user database could not be read: not a reason to drop anyone.
            Err(_) => Ok(()),
        }
    }

    async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<Authenticated>, Error> {
        let ok = if nix::unistd::geteuid().is_root() {
            let (service, user, secret, check) = (
                self.service.clone(),
                username.to_owned(),
                password.to_owned(),
                self.check_account,
            );
            tokio::task::spawn_blocking(move || authenticate(&service, &user, &secret, check))
                .await
                .map_err(|e| Error::Pam(format!("PAM thread failed: {e}")))??
        } else {
            let request = protocol::Request::CheckPam {
                user: username.to_owned(),
                password: password.to_owned(),
            };
            match protocol::call(&self.helper_socket, &request).await {
                Ok(protocol::Response::Pam { valid }) => valid,
                Ok(other) => return Err(Error::Helper(format!("unexpected answer: {other:?}"))),
                Err(e) => return Err(Error::Helper(e.to_string())),
            }
        };
        if !ok {
            return Ok(None);
        }
        let groups = if self.admin_groups.is_empty() && self.allowed_groups.is_empty() {
            Vec::new()
        } else {
            let user = username.to_owned();
            tokio::task::spawn_blocking(move || system_groups(&user))
                .await
                .unwrap_or_default()
        };
        if !self.allowed_groups.is_empty()
            && !groups.iter().any(|g| self.allowed_groups.contains(g))
        {
            return Err(Error::NotAllowed(username.to_owned()));
        }
        let admin = (!self.admin_groups.is_empty())
            .then(|| groups.iter().any(|g| self.admin_groups.contains(g)));
        Ok(Some(Authenticated {
            name: username.to_owned(),
            admitted: false,
            admin,
            auth_state: None,
            new_password_hash: None,
        }))
    }
}
