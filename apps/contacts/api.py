"""Contacts API (owner-scoped; another owner's ids answer 404). Views only validate input,
call one service or selector, and serialize the result."""

from __future__ import annotations

from base64 import b64encode
from urllib.parse import urlencode

from django.http import Http404, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.contacts import selectors, services
from apps.contacts.csv_import import rejections_csv
from apps.contacts.models import Contact, ContactImport, Tag
from apps.contacts.selectors import ContactFilter
from apps.contacts.serializers import (
    BulkUpsertSerializer,
    ContactImportSerializer,
    ContactInputSerializer,
    ContactListSerializer,
    ContactSerializer,
    ImportUploadSerializer,
    MembershipInputSerializer,
    TagInputSerializer,
    TagMergeSerializer,
    TagSerializer,
)
from apps.core.errors import ApplicationError
from apps.core.pagination import (
    CURSOR_PARAMETERS,
    PAGE_PARAMETERS,
    KeysetPagination,
    PageNumberPagination,
)
from apps.core.params import query_ids, query_search


def deep_page_cursor(position: int) -> str:
    """The ``cursor`` query value of the page after contact id ``position`` (newest first)."""
    return b64encode(urlencode({"p": str(position)}).encode()).decode()


def _query_filters(request, *, tags: tuple[int, ...] = ()) -> ContactFilter:
    """Filters from the query string; ``tags`` are already known to be the owner's."""
    extra = tuple(query_ids(request, "tag", what="a tag id"))
    include = (*tags, *extra)
    exclude = tuple(query_ids(request, "exclude_tag", what="a tag id"))
    known = set(tags)
    if extra or exclude:
        known |= set(
            Tag.objects.filter(owner=request.user, pk__in=[*extra, *exclude]).values_list(
                "pk", flat=True
            )
        )
    for name, ids in (("tag", include), ("exclude_tag", exclude)):
        unknown = [t for t in ids if t not in known]
        if unknown:
            raise ApplicationError(f"unknown tag id(s): {unknown[:20]}", field=name)
    status_value = request.query_params.get("status") or None
    if status_value and status_value not in Contact.Status.values:
        raise ApplicationError(f"must be one of {', '.join(Contact.Status.values)}", field="status")
    return ContactFilter(
        tags=tuple(dict.fromkeys(include)),
        exclude_tags=exclude,
        status=status_value,
        search=query_search(request),
    )


class MemberKeysetPagination(KeysetPagination):
    """Keyset pages of a tag-filtered list, on the membership's contact id (same values).

    The cursor bound is applied to both sides of the contact ⋈ membership join: PostgreSQL
    does not carry a range condition across a join, and a deep page would otherwise walk
    one of the two indexes from its top.
    """

    ordering = "-member_id"

    def paginate_queryset(self, queryset, request, view=None):
        cursor = self.decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            lookup = "id__gt" if cursor.reverse else "id__lt"
            queryset = queryset.filter(**{lookup: int(cursor.position)})
        return super().paginate_queryset(queryset, request, view)


def _keyset_for(filters: ContactFilter) -> type[KeysetPagination]:
    return MemberKeysetPagination if filters.tags else KeysetPagination


def _paginated(view: APIView, request, queryset, serializer_class, paginator_class):
    paginator = paginator_class()
    page = paginator.paginate_queryset(queryset, request, view=view)
    data = serializer_class(page, many=True, context={"request": request}).data
    return paginator.get_paginated_response(data)


_LIST_PARAMS = [
    OpenApiParameter("tag", int, many=True, description="has all of these tags (ids)"),
    OpenApiParameter("exclude_tag", int, many=True, description="has none of these tags"),
    OpenApiParameter("status", str, enum=Contact.Status.values),
    OpenApiParameter("search", str, description="e-mail or name contains (case-insensitive)"),
    *CURSOR_PARAMETERS,
]


# --- contacts --------------------------------------------------------------------------


class ContactListView(APIView):
    """GET: the owner's contacts, newest first, keyset pages (``?tag=&exclude_tag=&status=
    &search=``). POST: create one contact."""

    @extend_schema(parameters=_LIST_PARAMS, responses=ContactListSerializer(many=True))
    def get(self, request):
        filters = _query_filters(request)
        queryset = selectors.contact_list(owner=request.user, filters=filters)
        return _paginated(self, request, queryset, ContactListSerializer, _keyset_for(filters))

    @extend_schema(request=ContactInputSerializer, responses={201: ContactSerializer})
    def post(self, request):
        body = ContactInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        tag_ids = data.pop("tags", [])
        contact = services.contact_create(
            owner=request.user, data=data, tag_ids=tag_ids, actor=request.user
        )
        contact = Contact.objects.prefetch_related("memberships").get(pk=contact.pk)
        return Response(ContactSerializer(contact).data, status=status.HTTP_201_CREATED)


class ContactDetailView(APIView):
    def _contact(self, request, pk: int) -> Contact:
        return get_object_or_404(
            Contact.objects.prefetch_related("memberships"), owner=request.user, pk=pk
        )

    @extend_schema(responses=ContactSerializer)
    def get(self, request, pk: int):
        return Response(ContactSerializer(self._contact(request, pk)).data)

    @extend_schema(request=ContactInputSerializer, responses=ContactSerializer)
    def patch(self, request, pk: int):
        contact = self._contact(request, pk)
        body = ContactInputSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        data = {k: v for k, v in body.validated_data.items() if k != "tags"}
        services.contact_update(contact=contact, data=data, actor=request.user)
        return Response(ContactSerializer(self._contact(request, pk)).data)

    @extend_schema(request=ContactInputSerializer, responses=ContactSerializer)
    def put(self, request, pk: int):
        contact = self._contact(request, pk)
        body = ContactInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = {"first_name": "", "last_name": "", "attributes": {}, **body.validated_data}
        data.pop("tags", None)
        services.contact_update(contact=contact, data=data, actor=request.user)
        return Response(ContactSerializer(self._contact(request, pk)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, pk: int):
        services.contact_delete(contact=self._contact(request, pk), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ContactBulkView(APIView):
    """POST ``{"contacts": [...], "tags": [...]}``: upsert up to 10,000, all or nothing."""

    @extend_schema(request=BulkUpsertSerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request):
        body = BulkUpsertSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        results = services.contacts_bulk_upsert(
            owner=request.user,
            actor=request.user,
            rows=body.validated_data["contacts"],
            tag_names=body.validated_data["tags"],
        )
        totals = {"created": 0, "updated": 0, "unchanged": 0}
        for row in results:
            totals[row["result"]] += 1
        return Response({**totals, "results": results})


class ContactImportView(APIView):
    """POST a CSV file (multipart ``file``, optional ``tags``) → 202 and the import job."""

    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request=ImportUploadSerializer, responses={202: ContactImportSerializer})
    def post(self, request):
        body = ImportUploadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        job = services.contact_import_create(
            owner=request.user,
            actor=request.user,
            uploaded_file=body.validated_data["file"],
            tag_names=body.validated_data["tags"],
        )
        data = ContactImportSerializer(job, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED)


# --- imports ---------------------------------------------------------------------------


class ImportListView(APIView):
    @extend_schema(parameters=PAGE_PARAMETERS, responses=ContactImportSerializer(many=True))
    def get(self, request):
        return _paginated(
            self,
            request,
            selectors.import_list(owner=request.user),
            ContactImportSerializer,
            PageNumberPagination,
        )


class ImportDetailView(APIView):
    @extend_schema(responses=ContactImportSerializer)
    def get(self, request, pk: int):
        job = get_object_or_404(ContactImport, owner=request.user, pk=pk)
        return Response(ContactImportSerializer(job, context={"request": request}).data)


class ImportReportView(APIView):
    """The rejected rows of an import as a CSV download (``line,reason,raw``)."""

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request, pk: int):
        job = get_object_or_404(ContactImport, owner=request.user, pk=pk)
        response = StreamingHttpResponse(rejections_csv(job), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="import-{job.pk}-rejected.csv"'
        return response


# --- tags ------------------------------------------------------------------------------


def _parent(request, parent_id: int | None) -> Tag | None:
    if parent_id is None:
        return None
    try:
        return selectors.tag_get(owner=request.user, tag_id=parent_id)
    except Tag.DoesNotExist as exc:
        raise ApplicationError("unknown parent tag", field="parent") from exc


class TagPagination(PageNumberPagination):
    page_size = 200


class TagListView(APIView):
    """GET: the owner's tags with their exact ``contact_count``. POST: create a tag."""

    @extend_schema(parameters=PAGE_PARAMETERS, responses=TagSerializer(many=True))
    def get(self, request):
        return _paginated(
            self, request, selectors.tag_list(owner=request.user), TagSerializer, TagPagination
        )

    @extend_schema(request=TagInputSerializer, responses={201: TagSerializer})
    def post(self, request):
        body = TagInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        tag = services.tag_create(
            owner=request.user,
            actor=request.user,
            name=body.validated_data["name"],
            parent=_parent(request, body.validated_data.get("parent")),
        )
        return Response(TagSerializer(tag).data, status=status.HTTP_201_CREATED)


def _tag(request, pk: int) -> Tag:
    try:
        return selectors.tag_get(owner=request.user, tag_id=pk)
    except Tag.DoesNotExist as exc:
        raise Http404("No such tag.") from exc


class TagDetailView(APIView):
    @extend_schema(responses=TagSerializer)
    def get(self, request, pk: int):
        return Response(TagSerializer(_tag(request, pk)).data)

    @extend_schema(request=TagInputSerializer, responses=TagSerializer)
    def patch(self, request, pk: int):
        tag = _tag(request, pk)
        body = TagInputSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        parent = False
        if "parent" in body.validated_data:
            parent = _parent(request, body.validated_data["parent"])
        services.tag_update(
            tag=tag, name=body.validated_data.get("name"), parent=parent, actor=request.user
        )
        return Response(TagSerializer(tag).data)

    @extend_schema(responses={204: None})
    def delete(self, request, pk: int):
        services.tag_delete(tag=_tag(request, pk), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TagMergeView(APIView):
    """POST ``{"into": <tag id>}``: move every member into that tag and delete this one."""

    @extend_schema(request=TagMergeSerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request, pk: int):
        source = _tag(request, pk)
        body = TagMergeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            target = selectors.tag_get(owner=request.user, tag_id=body.validated_data["into"])
        except Tag.DoesNotExist as exc:
            raise ApplicationError("unknown target tag", field="into") from exc
        added = services.tag_merge(source=source, target=target, actor=request.user)
        return Response({"added": added, "tag": TagSerializer(target).data})


class TagContactsView(APIView):
    """GET: the tag's contacts (keyset pages; ``?status=&search=&exclude_tag=``).
    POST / DELETE ``{"contact_ids": [...]}`` or ``{"emails": [...]}`` or
    ``{"filter": {"tags", "exclude_tags", "status", "search"}}``: add / remove in bulk."""

    @extend_schema(parameters=_LIST_PARAMS, responses=ContactListSerializer(many=True))
    def get(self, request, pk: int):
        tag = _tag(request, pk)
        filters = _query_filters(request, tags=(tag.pk,))
        queryset = selectors.contact_list(owner=request.user, filters=filters)
        return _paginated(self, request, queryset, ContactListSerializer, MemberKeysetPagination)

    def _selection(self, request) -> services.ContactSelection:
        body = MembershipInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        if "filter" in data:
            f = data["filter"]
            return services.ContactSelection(
                filters=ContactFilter(
                    tags=tuple(f.get("tags", ())),
                    exclude_tags=tuple(f.get("exclude_tags", ())),
                    status=f.get("status"),
                    search=f.get("search"),
                )
            )
        if "emails" in data:
            return services.ContactSelection(emails=data["emails"])
        return services.ContactSelection(ids=data["contact_ids"])

    @extend_schema(request=MembershipInputSerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request, pk: int):
        tag = _tag(request, pk)
        change = services.tag_add_contacts(
            tag=tag, selection=self._selection(request), actor=request.user
        )
        return Response(
            {
                "matched": change.matched,
                "added": change.changed,
                "contact_count": change.contact_count,
            }
        )

    @extend_schema(request=MembershipInputSerializer, responses=OpenApiTypes.OBJECT)
    def delete(self, request, pk: int):
        tag = _tag(request, pk)
        change = services.tag_remove_contacts(
            tag=tag, selection=self._selection(request), actor=request.user
        )
        return Response(
            {
                "matched": change.matched,
                "removed": change.changed,
                "contact_count": change.contact_count,
            }
        )
