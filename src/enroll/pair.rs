//! `tars pair`: see [`run`].
