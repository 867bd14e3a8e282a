"""Look-alike grid pages (cut by a ``cluster`` job) and the people who skipped them.

A page belongs to the cluster job that cut it; its public id is
``"<job id>-<size>-<position>"``. A confirmed page is closed for everyone
(``confirmed_at``); a skipped page only for the person who skipped it
(:class:`GridPageSkip`). Pages are written by the job and closed by the domain
functions in :mod:`service.loop.grids`, never edited over HTTP, so the family has no
``Create`` / ``Update`` shapes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from service.models.common import json_field, utcnow


class GridPageBase(SQLModel):
    size: int = Field(description="page size: 4, 6 or 9")
    cluster: int = Field(description="the k-means cluster the page was cut from")
    cohesion: float = Field(description="mean cosine similarity to the cluster centre (higher: more alike)")
    suggested_class: str | None = Field(default=None, max_length=200,
                                        description="the model's best guess for the page (null before a model)")
    confidence: float | None = Field(default=None,
                                     description="mean probability of the suggested class over the page")
    agreement: float | None = Field(default=None,
                                    description="share of the page whose own top class is the suggestion")


class GridPage(GridPageBase, table=True):
    """One page as the cluster job cut it. ``item_ids`` nearest to the cluster centre first;
    ``holdout_ids``: hold-out items riding on the page, never shown (service/crud/holdout.py)."""

    __tablename__ = "grid_page"
    __table_args__ = (UniqueConstraint("job_id", "size", "position"),)
    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True, ondelete="CASCADE")
    project_id: int = Field(foreign_key="project.id", index=True, ondelete="CASCADE")
    position: int = Field(description="the page's place among the job's pages of its size (best first)")
    item_ids: list[int] = json_field(list)
    holdout_ids: list[int] = json_field(list)
    confirmed_at: datetime | None = None
    confirmed_by: int | None = Field(default=None, foreign_key="user.id", ondelete="SET NULL")
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def page_id(self) -> str:
        return page_id(self.job_id, self.size, self.position)


def page_id(job_id: int, size: int, position: int) -> str:
    """The public id of a page: ``"<job id>-<size>-<position>"``."""
    return f"{job_id}-{size}-{position}"


class GridPageSkip(SQLModel, table=True):
    """``user_id`` skipped page ``page_id``: it is not offered to them again."""

    __tablename__ = "grid_page_skip"
    __table_args__ = (UniqueConstraint("page_id", "user_id"),)
    id: int | None = Field(default=None, primary_key=True)
    page_id: int = Field(foreign_key="grid_page.id", index=True, ondelete="CASCADE")
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    created_at: datetime = Field(default_factory=utcnow)


class GridPagePublic(GridPageBase):
    """A page leased to the caller: its live items only, hold-out items hidden."""

    id: str = Field(description='"<cluster job id>-<size>-<index>"')
    item_ids: list[int] = Field(description="items still unlabelled, nearest to the cluster centre first")
    lease_expires_at: datetime


class GridPagesPublic(SQLModel):
    data: list[GridPagePublic]
    count: int
    cluster_job_id: int | None = Field(description="the clustering that cut these pages")
    model_version_id: int | None = Field(description="the model whose predictions made the suggestions")


class GridConfirm(SQLModel):
    """A confirm's body: one label for the page, with its exceptions."""

    label: str = Field(min_length=1, max_length=200, description="the class every non-excluded item gets")
    exclude: list[int] = Field(default_factory=list, max_length=9,
                               description="item ids that are not this class: left unlabelled, back in the queue")
    corrections: dict[int, str] = Field(
        default_factory=dict, max_length=9,
        description="item ids that are not this class, with the class each is instead: labelled with it "
                    "(one action each, like an exclusion, and the item needs no second look)")


class GridConfirmPublic(SQLModel):
    page_id: str
    label: str
    labelled: list[int] = Field(description="items that got the page's label (human, origin grid)")
    corrected: list[int] = Field(description="items that got the class given in corrections (human, origin grid)")
    released: list[int] = Field(description="excluded items, back in the queue")
    unavailable: list[int] = Field(description="items labelled meanwhile or held by someone else")


class GridSkipPublic(SQLModel):
    page_id: str
    released: list[int]


class GridUndoPublic(SQLModel):
    """An undone page confirm: the page is open again and leased to the caller."""

    page_id: str
    restored: list[int] = Field(description="items whose label from the confirm was undone (a new version)")
    unavailable: list[int] = Field(description="items changed since the confirm: left as they are")
