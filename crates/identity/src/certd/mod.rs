//! certd: certificates by id, issued from CSRs, imported, preloaded from files, and trust bundles.
