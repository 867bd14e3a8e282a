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
from service.models.items import Annotation, AnnotationPublic, Item, ItemPublic, ItemsPublic, Lease, Skip
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
from service.models.projects import (
    ImportedFile,
    LabelClass,
    LabelClassCreate,
    LabelClassPublic,
    LabelClassUpdate,
    Project,
    ProjectCreate,
    ProjectPublic,
    ProjectsPublic,
    ProjectUpdate,
    WatchedFolder,
)
from service.models.users import (
    ApiToken,
    AuditLog,
    AuditPublic,
    Membership,
    MembershipPublic,
    MembershipSet,
    TokenCreated,
    TokenPublic,
    User,
    UserCreate,
    UserPublic,
)

__all__ = [
    "ROLE_RANK", "TERMINAL_JOB_STATES", "Annotation", "AnnotationPublic", "ApiToken", "AuditLog",
    "AuditPublic", "ImportedFile", "Item", "ItemPublic", "ItemStatus", "ItemsPublic", "Job",
    "JobPublic", "JobState", "JobsPublic", "LabelClass", "LabelClassCreate", "LabelClassPublic",
    "LabelClassUpdate", "Lease", "Membership", "MembershipPublic", "MembershipSet", "ModelVersion",
    "ModelVersionPublic", "Prediction", "Project", "ProjectCreate", "ProjectPublic", "ProjectUpdate",
    "ProjectsPublic", "Provenance", "QueueReason", "RegisteredModel", "RegisteredModelPublic",
    "ReviewFlag", "Role", "Skip", "Task",
    "TokenCreated", "TokenPublic", "User", "UserCreate", "UserPublic", "WatchedFolder", "utcnow",
]
