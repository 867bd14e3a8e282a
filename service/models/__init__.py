"""All tables, imported here so that SQLModel.metadata knows every one of them."""

from service.models.common import (
    ROLE_RANK,
    TERMINAL_JOB_STATES,
    ItemStatus,
    JobState,
    Provenance,
    QueueReason,
    Role,
    Task,
    utcnow,
)
from service.models.grids import (  # noqa: F401  (the grid family, typed grid state)
    GridConfirm,
    GridConfirmPublic,
    GridPage,
    GridPagePublic,
    GridPageSkip,
    GridPagesPublic,
    GridSkipPublic,
)
from service.models.items import (
    Annotation,
    AnnotationPublic,
    DuplicateFile,
    Item,
    ItemBatchPublic,
    ItemPublic,
    ItemsPublic,
    LabelImportPublic,
    Lease,
    LeasePublic,
    LeaseRenewed,
    RejectedFile,
    RejectedShapePublic,
    ServerImport,
    Skip,
    SkipCreate,
    UploadedFile,
)
from service.models.ml import (
    Job,
    JobPublic,
    JobsPublic,
    ModelVersion,
    ModelVersionPublic,
    Prediction,
    RegisteredModel,
    RegisteredModelPublic,
    ReviewFlag,
)
from service.models.pending import PendingCorrect, PendingDecide, PendingDecided, PendingItemPublic, PendingPublic
from service.models.projects import (
    ImportedFile,
    LabelClass,
    LabelClassCreate,
    LabelClassPublic,
    LabelClassUpdate,
    PolicyPublic,
    Project,
    ProjectCreate,
    ProjectPublic,
    ProjectsPublic,
    ProjectUpdate,
    WatchedFolder,
)
from service.models.stats import ProjectStats, ReadinessPublic
from service.models.users import (
    ApiToken,
    AuditLog,
    AuditPublic,
    Login,
    LoginPublic,
    Membership,
    MembershipPublic,
    MembershipSet,
    TokenCreate,
    TokenCreated,
    TokenPublic,
    User,
    UserCreate,
    UserPublic,
)

__all__ = [
    "ROLE_RANK", "TERMINAL_JOB_STATES", "Annotation", "AnnotationPublic", "ApiToken", "AuditLog", "AuditPublic",
    "DuplicateFile", "ImportedFile", "Item", "ItemBatchPublic", "ItemPublic", "ItemStatus", "ItemsPublic", "Job",
    "JobPublic", "JobState", "JobsPublic", "LabelClass", "LabelClassCreate", "LabelClassPublic", "LabelClassUpdate",
    "LabelImportPublic", "Lease", "LeasePublic", "LeaseRenewed", "Login", "LoginPublic", "Membership",
    "MembershipPublic", "MembershipSet", "ModelVersion", "ModelVersionPublic", "PendingCorrect", "PendingDecide",
    "PendingDecided", "PendingItemPublic", "PendingPublic", "PolicyPublic", "Prediction", "Project",
    "ProjectCreate", "ProjectPublic", "ProjectStats", "ProjectUpdate", "ProjectsPublic", "Provenance",
    "QueueReason", "ReadinessPublic", "RegisteredModel", "RegisteredModelPublic", "RejectedFile",
    "RejectedShapePublic", "ReviewFlag", "Role", "ServerImport", "Skip", "SkipCreate", "Task", "TokenCreate",
    "TokenCreated", "TokenPublic", "UploadedFile", "User", "UserCreate", "UserPublic", "WatchedFolder", "utcnow",
]
