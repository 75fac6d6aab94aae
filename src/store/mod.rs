//! The only module that touches sled. (Being built; see issue 3.)
