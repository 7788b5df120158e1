//! A route's mapping profile: everything of a source's config that shapes
//! what the route sends for its events. A batch stores the profile it was
//! formed with (its definition, once per distinct profile), so every
//! attempt and every resend maps its events the same way, whatever a
//! reload changes since; new batches take the config of their moment.

use serde::{Deserialize, Serialize};

use crate::{
    config::{Config, SourceRef},
    domain::Route,
    map::{ld_to_segment::USER_KIND, mapping::Mappings},
};

/// What shapes a route's events, for one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// `segment-to-launchdarkly`: the source's mappings.
    Mappings(Mappings),
    /// `launchdarkly-to-segment`: what Data Export writes besides the event.
    Export(Export),
    /// The relays send what they received: nothing shapes them.
    Unchanged,
}

/// The `launchdarkly-to-segment` settings of a source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    pub project_id: Option<String>,
    /// The source's client-side id (`properties.environment` when the
    /// request names none).
    pub environment: Option<String>,
    pub copy_custom_data: bool,
    pub user_id_context_kind: String,
}

impl Profile {
    /// The profile `route` has for `source` in `config`. A source no longer
    /// configured gets the defaults.
    pub fn of(config: &Config, route: Route, source: &str) -> Profile {
        match route {
            Route::SegmentToLaunchDarkly => {
                Profile::Mappings(match config.source_by_name(source) {
                    Some(SourceRef::Segment(source)) => source.mappings.clone(),
                    _ => Mappings::default(),
                })
            }
            Route::LaunchDarklyToSegment => {
                let mut export = Export {
                    user_id_context_kind: USER_KIND.to_owned(),
                    ..Export::default()
                };
                if let Some(SourceRef::LaunchDarkly(source)) = config.source_by_name(source) {
                    export.project_id = source.project_id.clone();
                    export.environment = source.client_side_id.clone();
                    export.copy_custom_data = source.copy_custom_data;
                    if let Some(kind) = source
                        .to_segment
                        .as_ref()
                        .and_then(|dest| dest.user_id_context_kind.clone())
                    {
                        export.user_id_context_kind = kind;
                    }
                }
                Profile::Export(export)
            }
            Route::SegmentRelay | Route::LaunchDarklyRelay => Profile::Unchanged,
        }
    }

    /// The text a batch stores to be mapped with this profile again.
    pub fn definition(&self) -> String {
        match self {
            Profile::Mappings(mappings) => mappings.definition(),
            Profile::Export(export) => {
                serde_json::to_string(export).expect("export settings serialise")
            }
            Profile::Unchanged => String::new(),
        }
    }

    /// Reads back what [`Profile::definition`] wrote for `route`.
    pub fn from_definition(route: Route, definition: &str) -> Result<Profile, String> {
        match route {
            Route::SegmentToLaunchDarkly => {
                Mappings::from_definition(definition).map(Profile::Mappings)
            }
            Route::LaunchDarklyToSegment => serde_json::from_str(definition)
                .map(Profile::Export)
                .map_err(|error| format!("stored export settings: {error}")),
            Route::SegmentRelay | Route::LaunchDarklyRelay => Ok(Profile::Unchanged),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::mapping::MappingSpec;

    #[test]
    fn every_profile_reads_back_from_its_definition() {
        let mappings = Mappings::from_specs(&[MappingSpec {
            action: "custom".to_owned(),
            event_name: Some("purchase".into()),
            ..MappingSpec::default()
        }])
        .unwrap();
        let profiles = [
            (
                Route::SegmentToLaunchDarkly,
                Profile::Mappings(Mappings::default()),
            ),
            (Route::SegmentToLaunchDarkly, Profile::Mappings(mappings)),
            (
                Route::LaunchDarklyToSegment,
                Profile::Export(Export {
                    project_id: Some("p".to_owned()),
                    environment: None,
                    copy_custom_data: true,
                    user_id_context_kind: "organization".to_owned(),
                }),
            ),
            (Route::LaunchDarklyRelay, Profile::Unchanged),
        ];
        for (route, profile) in profiles {
            let again = Profile::from_definition(route, &profile.definition()).unwrap();
            assert_eq!(again, profile);
        }
    }
}
