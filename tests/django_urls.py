"""URLs of the minimal Django host used by the dashboard's mount tests."""

from django.http import HttpRequest, HttpResponse
from django.urls import path


def host(request: HttpRequest) -> HttpResponse:
    return HttpResponse("host page", content_type="text/plain")


urlpatterns = [path("host", host)]
