//! The resource types the seed implements: their properties (kind, required, how a change is
//! applied) and attributes. One table per type, so adding a property is one line.

/// The shape a property value must have (checked on literal values at parse time).
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A string (numbers and booleans are accepted and converted, as Heat does).
    Str,
    /// An integer.
    Int,
    /// A boolean.
    Bool,
    /// Any mapping.
    Map,
    /// Any list.
    List,
    /// Anything.
    Any,
    /// A mapping with these keys.
    Record(&'static [PropSpec]),
    /// A list of mappings with these keys.
    ListOf(&'static [PropSpec]),
}

impl Kind {
    /// "a string", "an integer", … for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Int => "an integer",
            Kind::Bool => "a boolean",
            Kind::Map | Kind::Record(_) => "a mapping",
            Kind::List | Kind::ListOf(_) => "a list",
            Kind::Any => "anything",
        }
    }
}

/// How a changed property is applied on `stack update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// The resource is updated where it is.
    InPlace,
    /// The resource is deleted and created again (e.g. a server's image).
    Replace,
}

/// One property of a resource type.
#[derive(Debug, Clone, Copy)]
pub struct PropSpec {
    /// Its name.
    pub name: &'static str,
    /// Whether a resource must set it.
    pub required: bool,
    /// Its shape.
    pub kind: Kind,
    /// How a change is applied.
    pub update: Update,
    /// If not empty, the only values allowed (strings).
    pub allowed: &'static [&'static str],
}

const fn p(name: &'static str, kind: Kind, update: Update) -> PropSpec {
    PropSpec {
        name,
        required: false,
        kind,
        update,
        allowed: &[],
    }
}

const fn req(name: &'static str, kind: Kind, update: Update) -> PropSpec {
    PropSpec {
        name,
        required: true,
        kind,
        update,
        allowed: &[],
    }
}

const fn one_of(name: &'static str, allowed: &'static [&'static str], update: Update) -> PropSpec {
    PropSpec {
        name,
        required: false,
        kind: Kind::Str,
        update,
        allowed,
    }
}

use Kind::*;
use Update::*;

const ROOT_DEVICE_HINT: &[PropSpec] = &[
    p("size_gib", Int, Replace),
    p("min_size_gib", Int, Replace),
    p("model", Str, Replace),
    p("serial", Str, Replace),
];

const SERVER: &[PropSpec] = &[
    req("image", Str, Replace),
    p("profile", Str, Replace),
    p("min_ram_mib", Int, Replace),
    p("min_disk_gib", Int, Replace),
    p("root_device_hint", Record(ROOT_DEVICE_HINT), Replace),
    p("metadata", Map, InPlace),
    p("name", Str, InPlace),
];

const REMOVAL_POLICY: &[PropSpec] = &[p("resource_list", List, InPlace)];

const RESOURCE_GROUP: &[PropSpec] = &[
    p("count", Int, InPlace),
    // Validated as a nested resource by the parser, not by this table.
    req("resource_def", Map, InPlace),
    p("removal_policies", ListOf(REMOVAL_POLICY), InPlace),
    p("index_var", Str, InPlace),
];

const CONFIG_IO: &[PropSpec] = &[
    req("name", Str, Replace),
    p("type", Str, Replace),
    p("default", Any, Replace),
    p("description", Str, Replace),
    p("error_output", Bool, Replace),
];

const GROUPS: &[&str] = &["script", "os-apply-config", "Heat::Ungrouped"];

// Configs are immutable in Heat: any change makes a new config (a replacement), and the
// deployments that reference it are then updated in place.
const SOFTWARE_CONFIG: &[PropSpec] = &[
    p("config", Str, Replace),
    one_of("group", GROUPS, Replace),
    p("inputs", ListOf(CONFIG_IO), Replace),
    p("outputs", ListOf(CONFIG_IO), Replace),
    p("options", Map, Replace),
];

const STRUCTURED_CONFIG: &[PropSpec] = &[
    p("config", Any, Replace),
    one_of("group", GROUPS, Replace),
    p("inputs", ListOf(CONFIG_IO), Replace),
    p("outputs", ListOf(CONFIG_IO), Replace),
    p("options", Map, Replace),
];

const SIGNALS: &[&str] = &[
    "NO_SIGNAL",
    "HEAT_SIGNAL",
    "CFN_SIGNAL",
    "TEMP_URL_SIGNAL",
    "ZAQAR_SIGNAL",
];

/// The properties of a SoftwareDeployment and a SoftwareDeploymentGroup: the same but for
/// `target`, what they deploy to (`server` or `servers`).
const fn deployment(target: PropSpec) -> [PropSpec; 6] {
    [
        p("config", Str, InPlace),
        target,
        p("input_values", Map, InPlace),
        one_of("signal_transport", SIGNALS, InPlace),
        p("actions", List, InPlace),
        p("name", Str, InPlace),
    ]
}

const DEPLOYMENT: &[PropSpec] = &deployment(req("server", Str, Replace));

const DEPLOYMENT_GROUP: &[PropSpec] = &deployment(req("servers", Map, InPlace));

const WAIT_CONDITION: &[PropSpec] = &[
    req("handle", Str, Replace),
    p("count", Int, InPlace),
    req("timeout", Int, InPlace),
];

const CHAR_CLASS: &[PropSpec] = &[
    PropSpec {
        name: "class",
        required: true,
        kind: Str,
        update: Replace,
        allowed: &[
            "lettersdigits",
            "letters",
            "lowercase",
            "uppercase",
            "digits",
            "hexdigits",
            "octdigits",
        ],
    },
    p("min", Int, Replace),
];

const CHAR_SEQUENCE: &[PropSpec] = &[req("sequence", Str, Replace), p("min", Int, Replace)];

const RANDOM_STRING: &[PropSpec] = &[
    p("length", Int, Replace),
    p("character_classes", ListOf(CHAR_CLASS), Replace),
    p("character_sequences", ListOf(CHAR_SEQUENCE), Replace),
    p("salt", Str, Replace),
];

/// A resource type the seed implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceType {
    /// `OS::Seed::Server` (alias `OS::Nova::Server`): a bare-metal node deployed with an image.
    Server,
    /// `OS::Heat::ResourceGroup`: `count` copies of a resource definition.
    ResourceGroup,
    /// `OS::Heat::SoftwareConfig`: a script or config text.
    SoftwareConfig,
    /// `OS::Heat::StructuredConfig`: a config mapping (os-apply-config metadata).
    StructuredConfig,
    /// `OS::Heat::SoftwareDeployment`: a config applied to one server.
    SoftwareDeployment,
    /// `OS::Heat::StructuredDeployment`: a structured config applied to one server.
    StructuredDeployment,
    /// `OS::Heat::SoftwareDeploymentGroup`: a config applied to a map of servers.
    SoftwareDeploymentGroup,
    /// `OS::Heat::StructuredDeploymentGroup`: a structured config applied to a map of servers.
    StructuredDeploymentGroup,
    /// `OS::Heat::WaitCondition`: wait for `count` signals on a handle.
    WaitCondition,
    /// `OS::Heat::WaitConditionHandle`: where nodes signal.
    WaitConditionHandle,
    /// `OS::Heat::RandomString`: a generated secret.
    RandomString,
}

const NAMES: &[(&str, ResourceType)] = &[
    ("OS::Seed::Server", ResourceType::Server),
    ("OS::Nova::Server", ResourceType::Server),
    ("OS::Heat::ResourceGroup", ResourceType::ResourceGroup),
    ("OS::Heat::SoftwareConfig", ResourceType::SoftwareConfig),
    ("OS::Heat::StructuredConfig", ResourceType::StructuredConfig),
    (
        "OS::Heat::SoftwareDeployment",
        ResourceType::SoftwareDeployment,
    ),
    (
        "OS::Heat::StructuredDeployment",
        ResourceType::StructuredDeployment,
    ),
    (
        "OS::Heat::SoftwareDeploymentGroup",
        ResourceType::SoftwareDeploymentGroup,
    ),
    (
        "OS::Heat::StructuredDeploymentGroup",
        ResourceType::StructuredDeploymentGroup,
    ),
    ("OS::Heat::WaitCondition", ResourceType::WaitCondition),
    (
        "OS::Heat::WaitConditionHandle",
        ResourceType::WaitConditionHandle,
    ),
    ("OS::Heat::RandomString", ResourceType::RandomString),
];

impl ResourceType {
    /// The type for a template's `type:` string.
    pub fn from_name(name: &str) -> Option<Self> {
        NAMES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }

    /// The canonical name (`OS::Seed::Server` for both server spellings).
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    pub(crate) fn known_names() -> String {
        NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
    }

    /// The properties of this type.
    pub fn properties(self) -> &'static [PropSpec] {
        match self {
            ResourceType::Server => SERVER,
            ResourceType::ResourceGroup => RESOURCE_GROUP,
            ResourceType::SoftwareConfig => SOFTWARE_CONFIG,
            ResourceType::StructuredConfig => STRUCTURED_CONFIG,
            ResourceType::SoftwareDeployment | ResourceType::StructuredDeployment => DEPLOYMENT,
            ResourceType::SoftwareDeploymentGroup | ResourceType::StructuredDeploymentGroup => {
                DEPLOYMENT_GROUP
            }
            ResourceType::WaitCondition => WAIT_CONDITION,
            ResourceType::WaitConditionHandle => &[],
            ResourceType::RandomString => RANDOM_STRING,
        }
    }

    /// The attributes `get_attr` may ask for; `None` when any name is allowed (deployments
    /// expose their config's declared outputs, which are only known at run time).
    pub fn attributes(self) -> Option<&'static [&'static str]> {
        match self {
            ResourceType::Server => Some(&["name", "ip", "node", "mac"]),
            ResourceType::ResourceGroup => Some(&["refs", "refs_map", "attributes"]),
            ResourceType::SoftwareConfig | ResourceType::StructuredConfig => Some(&["config"]),
            ResourceType::SoftwareDeployment
            | ResourceType::StructuredDeployment
            | ResourceType::SoftwareDeploymentGroup
            | ResourceType::StructuredDeploymentGroup => None,
            ResourceType::WaitCondition => Some(&["data"]),
            ResourceType::WaitConditionHandle => Some(&["token", "endpoint", "curl_cli", "signal"]),
            ResourceType::RandomString => Some(&["value"]),
        }
    }

    /// Whether `attribute` exists on this type.
    pub fn has_attribute(self, attribute: &str) -> bool {
        self.attributes()
            .is_none_or(|known| known.contains(&attribute))
    }
}

/// Comma-separated names of a property table, for error messages.
pub(crate) fn names(specs: &[PropSpec]) -> String {
    specs.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}
