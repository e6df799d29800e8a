//! ipvsadm's words for the model's values, which only the CLI prints or reads: the model
//! (xvs-model) holds the meaning, this module the spelling.

use xvs_dataplane::service::spec::ForwardMethod;

/// ipvsadm's spellings of a forwarding method.
pub trait MethodWords {
    /// The word ipvsadm prints in the Forward column.
    fn label(self) -> &'static str;
    /// The ipvsadm option that selects it (`-g`, `-i`, `-m`).
    fn option(self) -> &'static str;
}

impl MethodWords for ForwardMethod {
    fn label(self) -> &'static str {
        match self {
            ForwardMethod::Route => "Route",
            ForwardMethod::Tunnel => "Tunnel",
            ForwardMethod::Masq => "Masq",
        }
    }

    fn option(self) -> &'static str {
        match self {
            ForwardMethod::Route => "-g",
            ForwardMethod::Tunnel => "-i",
            ForwardMethod::Masq => "-m",
        }
    }
}
